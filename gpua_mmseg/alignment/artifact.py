"""The alignment artifact: an orthogonal map ``W [dv, dc]`` plus JSON metadata (safetensors)."""
import hashlib
import json
import os.path as osp
import warnings
from typing import Any, Dict, List, Optional, Union

import torch

from ..utils.atomic import atomic_write
from ..version import __version__
from ..vocabulary import Vocabulary, VocabularyLike
from ._checks import check_matrix, l2n
from .linalg import csls as _csls
from .linalg import orthogonality_error

Tensor = torch.Tensor
FORMAT_VERSION = 2
#: Largest accepted max-abs deviation of W's Gram matrix from I on load (fitters reach 1e-5).
ORTHOGONALITY_TOL = 1e-4
__all__ = ['AlignmentMap', 'vocabulary_hash', 'tensors_sha256', 'atomic_write',
           'FORMAT_VERSION', 'ORTHOGONALITY_TOL']
_META_KEY = 'gpua_mmseg'


def vocabulary_hash(names: VocabularyLike) -> str:
    """:attr:`gpua_mmseg.vocabulary.Vocabulary.hash` of ``names`` (16 hex characters)."""
    return Vocabulary.parse(names).hash


def tensors_sha256(tensors: Dict[str, Tensor]) -> str:
    """sha256 hex digest of named tensors (name, dtype, shape and bytes, sorted by name)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f'{name}:{t.dtype}:{tuple(t.shape)};'.encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class AlignmentMap:
    """An orthogonal map from VFM patch features into the CLIP joint space.

    Attributes:
        W: [dv, dc] float32, orthonormal columns (dv >= dc) or rows (dv < dc).
        mu_v: optional [dv] centring subtracted from VFM features before normalisation.
        csls_r: optional [K] mean cosine of each prototype to its k nearest mapped training
            features (used by CSLS at inference).
        meta: JSON-serialisable metadata (method, hyper-parameters, dims, vocabulary, ...).
    """

    def __init__(self, W: Tensor, meta: Optional[Dict[str, Any]] = None,
                 mu_v: Optional[Tensor] = None, csls_r: Optional[Tensor] = None):
        W = check_matrix('W', W).float()
        self.W = W
        self.mu_v = None if mu_v is None else mu_v.float().reshape(-1)
        if self.mu_v is not None and self.mu_v.numel() != W.shape[0]:
            raise ValueError(f'mu_v has {self.mu_v.numel()} entries, W expects dv={W.shape[0]}')
        self.csls_r = None if csls_r is None else csls_r.float().reshape(-1)
        self.meta = dict(meta or {})
        self.meta.setdefault('dv', int(W.shape[0]))
        self.meta.setdefault('dc', int(W.shape[1]))

    @property
    def dv(self) -> int:
        return int(self.W.shape[0])

    @property
    def dc(self) -> int:
        return int(self.W.shape[1])

    def to(self, device=None, dtype=None) -> 'AlignmentMap':
        conv = (lambda t: None if t is None else t.to(device=device, dtype=dtype))
        return AlignmentMap(conv(self.W), self.meta, conv(self.mu_v), conv(self.csls_r))

    def orthogonality_error(self) -> float:
        return orthogonality_error(self.W)

    def transform(self, v: Tensor) -> Tensor:
        """``normalise(normalise(v - mu_v) @ W)``: [..., dv] -> [..., dc] (dtype of ``v``)."""
        if v.shape[-1] != self.dv:
            raise ValueError(f'features have dimension {v.shape[-1]} but the map expects '
                             f'dv={self.dv} (was it fitted for another VFM?)')
        W = self.W.to(device=v.device, dtype=v.dtype)
        if self.mu_v is not None:
            v = v - self.mu_v.to(device=v.device, dtype=v.dtype)
        return l2n(l2n(v) @ W)

    def logits(self, v: Tensor, prototypes: Tensor, similarity: str = 'cosine',
               csls_k: int = 10, per_item: bool = False) -> Tensor:
        """Similarity logits of mapped features to prototypes: [..., dv] x [K, dc] -> [..., K].

        ``similarity='cosine'`` (default) or ``'csls'``.  CSLS's prototype radius ``r(t)`` is
        the stored ``csls_r`` when its length matches K (fit-time neighbourhood), otherwise the
        mean cosine of ``t`` to its ``csls_k`` nearest mapped features: of all of ``v``, or,
        with ``per_item=True`` and ``v`` of shape ``[B, ..., dv]``, of item ``b``'s own
        features (a crop's result then never depends on the other crops of the batch).
        Scores are unitless (cosine in [-1, 1]; CSLS roughly in [-4, 4]), in ``v``'s dtype.
        """
        if prototypes.shape[-1] != self.dc:
            raise ValueError(f'prototypes have dimension {prototypes.shape[-1]} but the map '
                             f'expects dc={self.dc}')
        u = self.transform(v)
        t = l2n(prototypes.to(device=u.device, dtype=u.dtype))
        if similarity == 'cosine':
            return u @ t.T
        if similarity != 'csls':
            raise ValueError(f"similarity must be 'cosine' or 'csls', got {similarity!r}")
        r_x = self.csls_r if (self.csls_r is not None
                              and self.csls_r.numel() == t.shape[0]) else None
        items = u.reshape(u.shape[0], -1, self.dc) if per_item else u.reshape(1, -1, self.dc)
        out = torch.stack([_csls(x, t, k=csls_k,
                                 r_x=None if r_x is None else r_x.to(x.device, torch.float32))
                           for x in items.unbind(0)])
        return out.reshape(*u.shape[:-1], t.shape[0]).to(u.dtype)

    # ------------------------------------------------------------------ identity
    @property
    def identity(self) -> Optional[Dict[str, Any]]:
        """What the map was fitted for (see :mod:`gpua_mmseg.models.identity`), or ``None``
        for artifacts written before identities existed."""
        ident = self.meta.get('identity')
        return dict(ident) if isinstance(ident, dict) else None

    def _legacy_identity(self) -> Dict[str, Any]:
        """The identity keys an older artifact stores loose in its metadata."""
        out = {}
        for key in ('vfm', 'vlm'):
            val = self.meta.get(key)
            if isinstance(val, dict):
                val = val.get('name')
            if val is not None:
                out[key] = str(val)
        for key in ('clip_mode', 'prototype_mode', 'vocab_hash'):
            if self.meta.get(key) is not None:
                out[key] = self.meta[key]
        return out

    def check_identity(self, expected: Dict[str, Any], source: str = 'the alignment artifact',
                       refit: Optional[str] = None) -> None:
        """Raise ``ValueError`` listing every difference between ``expected`` and the stored
        identity (keys whose expected value is ``None`` and ``method`` are not compared).

        Artifacts without an identity (older format) are compared on the keys they store
        loose (``vfm``, ``vlm``, ``clip_mode``, ``prototype_mode``, ``vocab_hash``), with a
        warning that their weights cannot be checked.

        Args:
            expected: e.g. :func:`gpua_mmseg.models.identity.artifact_identity`'s result.
            source: how to name the artifact in the message (e.g. its path).
            refit: the command that refits it (default: a ``tools/fit_alignment.py`` hint).
        """
        have = self.identity
        if have is None:
            have = self._legacy_identity()
            warnings.warn(f'{source} records no identity (written by an older gpua_mmseg, or '
                          'by hand): its weights, activation and CLIP mode cannot be verified; '
                          'refit it to be safe', stacklevel=2)
        problems = []
        for key, want in expected.items():
            if key == 'method' or want is None or key not in have:
                continue
            if have[key] != want:
                problems.append(f'{key}: artifact {have[key]!r}, expected {want!r}')
        if problems:
            raise ValueError(
                f'{source} was fitted for something else:\n  - ' + '\n  - '.join(problems)
                + '\nRefit it for this configuration: '
                + (refit or 'python tools/fit_alignment.py CONFIG --out ARTIFACT (or tools/'
                   'demo.py --fit for a demo vocabulary)'))

    def validate(self, dv: Optional[int] = None, dc: Optional[int] = None,
                 vocabulary: Optional[VocabularyLike] = None, vfm: Optional[str] = None,
                 vlm: Optional[str] = None, source: str = 'the alignment artifact',
                 identity: Optional[Dict[str, Any]] = None, refit: Optional[str] = None) -> None:
        """Check dims, then :meth:`check_identity` on ``identity`` updated with the given
        ``vfm`` / ``vlm`` names and ``vocabulary`` (its canonical hash)."""
        problems = []
        if dv is not None and int(dv) != self.dv:
            problems.append(f'VFM dim: artifact {self.dv}, expected {dv}')
        if dc is not None and int(dc) != self.dc:
            problems.append(f'CLIP dim: artifact {self.dc}, expected {dc}')
        if problems:
            raise ValueError(f'{source} does not fit the encoders: ' + '; '.join(problems)
                             + '. Refit it: ' + (refit or 'python tools/fit_alignment.py CONFIG'))
        expected = dict(identity or {})
        for key, val in (('vfm', vfm), ('vlm', vlm)):
            if val is not None:
                expected[key] = val
        if vocabulary is not None:
            expected['vocab_hash'] = Vocabulary.parse(vocabulary).hash
        if expected:
            self.check_identity(expected, source, refit)

    @property
    def vocabulary(self) -> Optional[Vocabulary]:
        """The vocabulary stored in the metadata (``None`` if it stores none)."""
        vocab = self.meta.get('vocabulary')
        return None if vocab is None else Vocabulary.parse(vocab)

    # ------------------------------------------------------------------ io
    def _tensors(self) -> Dict[str, Tensor]:
        tensors = {'W': self.W.detach().cpu().float().contiguous()}
        if self.mu_v is not None:
            tensors['mu_v'] = self.mu_v.detach().cpu().float().contiguous()
        if self.csls_r is not None:
            tensors['csls_r'] = self.csls_r.detach().cpu().float().contiguous()
        return tensors

    def save(self, path: str) -> None:
        """Write ``path`` (safetensors; metadata as JSON in the header) atomically.

        The metadata records ``tensor_sha256`` (see :func:`tensors_sha256`), checked on load.
        """
        from safetensors.torch import save_file
        tensors = self._tensors()
        meta = dict(self.meta)
        meta['format_version'] = FORMAT_VERSION
        meta.setdefault('package_version', __version__)
        meta['tensor_sha256'] = tensors_sha256(tensors)
        header = {_META_KEY: json.dumps(meta, sort_keys=True, default=_json_default)}
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))

    @classmethod
    def load(cls, path: str, map_location: Union[str, torch.device] = 'cpu') -> 'AlignmentMap':
        """Load and verify an artifact written by :meth:`save`.

        Checks, each failing with one ``ValueError`` that names the file and the fix: a
        readable safetensors file with ``W`` and a JSON-object metadata; the recorded tensor
        checksum (older artifacts without one load with a warning); finite tensors of matching
        sizes; ``W`` orthogonal within :data:`ORTHOGONALITY_TOL`; metadata consistent with
        itself (dims, vocabulary vs. its hash, identity, prototype count).

        Raises:
            FileNotFoundError: ``path`` does not exist.
            ValueError: any check above.
        """
        path = str(path)
        if not osp.isfile(path):
            raise FileNotFoundError(f'alignment artifact {path!r} does not exist')
        from safetensors import safe_open
        try:
            with safe_open(path, framework='pt', device='cpu') as f:
                header = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # safetensors raises its own error types
            raise ValueError(f'{path!r} is not a readable safetensors alignment artifact ({e}); '
                             'refit it (tools/fit_alignment.py)') from None
        if _META_KEY not in header or 'W' not in tensors:
            raise ValueError(f'{path!r} is a safetensors file but not a gpua_mmseg alignment '
                             "artifact (no 'W' tensor / metadata)")
        try:
            meta = json.loads(header[_META_KEY])
        except ValueError as e:
            raise ValueError(f'{path!r}: its metadata is not valid JSON ({e}); the file was '
                             'edited or damaged: refit it (tools/fit_alignment.py)') from None
        if not isinstance(meta, dict):
            raise ValueError(f'{path!r}: its metadata is a JSON {type(meta).__name__}, not an '
                             'object; the file was edited or not written by gpua_mmseg: refit it '
                             '(tools/fit_alignment.py)')
        try:
            version = int(meta.get('format_version', 0))
        except (TypeError, ValueError):
            raise ValueError(f'{path!r}: format_version {meta.get("format_version")!r} is not an '
                             'integer; refit the artifact') from None
        if version > FORMAT_VERSION:
            raise ValueError(f'{path!r} has format version {version}, newer than '
                             f'this gpua_mmseg ({FORMAT_VERSION}); upgrade gpua_mmseg')
        problems = _check_tensors(tensors, meta, path)
        if problems:
            raise ValueError(f'alignment artifact {path!r} is corrupt: ' + '; '.join(problems)
                             + '. Refit it (tools/fit_alignment.py, or tools/demo.py --fit).')
        amap = cls(tensors['W'], meta, tensors.get('mu_v'), tensors.get('csls_r'))
        if str(map_location) != 'cpu':
            amap = amap.to(device=map_location)
        return amap


def _check_tensors(tensors: Dict[str, Tensor], meta: Dict[str, Any], path: str) -> List[str]:
    """Integrity and consistency problems of a loaded artifact (empty list: none)."""
    want = meta.get('tensor_sha256')
    if want is None:
        warnings.warn(f'alignment artifact {path!r} has no tensor checksum (written by an older '
                      'gpua_mmseg): it cannot be verified; refit it to upgrade', stacklevel=3)
    elif tensors_sha256(tensors) != want:
        return ['the stored tensors do not match the checksum recorded at fit time (bit rot, '
                'truncation or an edited file)']
    problems = []
    for name, t in tensors.items():
        if not torch.is_floating_point(t):
            problems.append(f'tensor {name!r} has dtype {t.dtype}, expected float')
        elif not bool(torch.isfinite(t).all()):
            problems.append(f'tensor {name!r} has {int((~torch.isfinite(t)).sum())} non-finite '
                            'values')
    if problems:
        return problems
    W = tensors['W']
    if W.ndim != 2 or min(W.shape) < 1:
        return [f'W has shape {tuple(W.shape)}, expected [dv, dc]']
    err = orthogonality_error(W)
    if not err <= ORTHOGONALITY_TOL:
        problems.append(f'W is not orthogonal (max |Gram - I| = {err:.3g} > '
                        f'{ORTHOGONALITY_TOL:g})')
    for key, size in (('dv', W.shape[0]), ('dc', W.shape[1])):
        if key in meta and meta[key] != int(size):
            problems.append(f'metadata {key}={meta[key]!r} but W is {tuple(W.shape)}')
    if 'mu_v' in tensors and tensors['mu_v'].numel() != W.shape[0]:
        problems.append(f'mu_v has {tensors["mu_v"].numel()} entries, W has dv={W.shape[0]}')
    vocab = None
    if meta.get('vocabulary') is not None:
        try:
            vocab = Vocabulary.parse(meta['vocabulary'])
        except (ValueError, TypeError) as e:
            problems.append(f'metadata vocabulary is malformed ({e})')
    hashes = {'vocab_hash': meta.get('vocab_hash')}
    ident = meta.get('identity')
    if ident is not None and not isinstance(ident, dict):
        problems.append(f'metadata identity is a {type(ident).__name__}, expected an object')
    elif ident is not None:
        hashes['identity.vocab_hash'] = ident.get('vocab_hash')
    hashes = {k: v for k, v in hashes.items() if v is not None}
    if vocab is not None:
        hashes['hash of the stored vocabulary'] = vocab.hash
    if len(set(hashes.values())) > 1:
        problems.append('the metadata disagrees with itself on the vocabulary ('
                        + ', '.join(f'{k} {v}' for k, v in hashes.items())
                        + '): was the vocabulary list edited?')
    n_proto = meta.get('n_prototypes')
    if 'csls_r' in tensors and isinstance(n_proto, int) and tensors['csls_r'].numel() != n_proto:
        problems.append(f'csls_r has {tensors["csls_r"].numel()} entries for {n_proto} '
                        'prototypes')
    mode = (ident or {}).get('prototype_mode', meta.get('prototype_mode'))
    if vocab is not None and isinstance(n_proto, int) and meta.get('format_version', 0) >= 2:
        k = {'query': len(vocab.queries), 'class_mean': len(vocab)}.get(mode)
        if k is not None and k != n_proto:
            problems.append(f'{n_proto} prototypes but the stored vocabulary has {k} '
                            f'({mode} prototypes)')
    return problems


def _json_default(o):
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if hasattr(o, 'item'):
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    raise TypeError(f'{type(o).__name__} is not JSON serialisable')
