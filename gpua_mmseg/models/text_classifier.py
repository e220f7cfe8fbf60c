"""Zero-shot text classifier: one L2-normalised CLIP text embedding per query name.

The vocabulary (``class_names`` in the model config) is anything
:meth:`gpua_mmseg.vocabulary.Vocabulary.parse` accepts: a shipped key (``'voc21'``), a class-name
file, a ``"cat, kitty; sofa"`` text or a list of names / synonym lists (one rule for all of
them, see :mod:`gpua_mmseg.vocabulary`).

Each synonym is its own query; a class's score is the max over its queries (:meth:`class_scores`).
Embeddings: per query, all templates are encoded, each is L2-normalised, they are averaged and
the mean is renormalised.  They are cached per (encoder weights, queries, templates) so that a
segmentor computes them once, not per image.  For pretrained weights they are also kept on disk
(``$GPUA_MMSEG_CACHE/text_embeddings``, keyed by a digest of the text tower's weights *and* its
activation: the same weights under GELU and QuickGELU give different embeddings), because
80 templates x ~60 queries take minutes on a CPU and every ``tools/test.py`` run would otherwise
pay them again; ``GPUA_MMSEG_TEXT_CACHE=0`` turns this off.  The disk cache is best-effort: an
unreadable or unwritable entry (full disk, read-only folder) is recomputed, never fatal.
"""
import hashlib
import json
import logging
import os
import os.path as osp
import weakref
from typing import Dict, List, Union

import torch

from ..vocabulary import Vocabulary, VocabularyLike
from .templates import resolve_templates

ClassNames = VocabularyLike
logger = logging.getLogger(__name__)


def class_scores(query_scores: torch.Tensor, query_to_class: torch.Tensor, num_classes: int
                 ) -> torch.Tensor:
    """[..., Q] per-query scores -> [..., C], the max over each class's queries (last axis)."""
    q = query_to_class.shape[0]
    if query_scores.shape[-1] != q:
        raise ValueError(f'query scores have {query_scores.shape[-1]} entries on the last axis, '
                         f'the classifier has {q} queries')
    idx = query_to_class.to(query_scores.device).expand(query_scores.shape)
    out = torch.full((*query_scores.shape[:-1], num_classes), float('-inf'),
                     dtype=query_scores.dtype, device=query_scores.device)
    return out.scatter_reduce(-1, idx, query_scores, reduce='amax', include_self=True)


@torch.no_grad()
def encode_queries(encoder, queries: List[str], templates: List[str], batch_size: int = 512
                   ) -> torch.Tensor:
    """-> [Q, dc]: per query mean of L2-normalised template embeddings, renormalised."""
    texts = [t.format(q) for q in queries for t in templates]
    tokens = encoder.tokenize(texts)
    full = (tokens != 0).sum(1) >= tokens.shape[1]  # filled to the last slot: cut short
    if bool(full.any()):
        cut = sorted({queries[i // len(templates)] for i in full.nonzero()[:, 0].tolist()})
        logger.warning('%d prompt(s) exceed the text context of %d tokens and are truncated '
                       '(names %s); such names may get identical embeddings: shorten them',
                       int(full.sum()), tokens.shape[1], cut[:5])
    # Shortest prompts first: the encoder runs each batch only up to its longest prompt
    # (CLIPEncoder.encode_text), so batches of similar lengths waste nothing on padding.
    order = torch.argsort((tokens != 0).sum(1), stable=True)
    embs = []
    for i in range(0, len(texts), batch_size):
        e = encoder.encode_text(tokens[order[i:i + batch_size]])
        embs.append(e / e.norm(dim=-1, keepdim=True))
    e = embs[0].new_empty((len(texts), embs[0].shape[-1]))
    e[order] = torch.cat(embs)
    e = e.reshape(len(queries), len(templates), -1).mean(1)
    return e / e.norm(dim=-1, keepdim=True)


def _disk_cache_dir(encoder) -> Union[str, None]:
    """Folder for persisted embeddings, or None: off by env, or random-init weights (which
    differ per run, so caching them would only litter the disk)."""
    if os.environ.get('GPUA_MMSEG_TEXT_CACHE', '1').lower() in ('0', 'false', 'no', ''):
        return None
    if getattr(encoder, 'info', {}).get('pretrained') in (None, False):
        return None
    from ..weights import cache_dir
    return osp.join(cache_dir(), 'text_embeddings')


def _disk_key(encoder, queries: List[str], templates: List[str]) -> str:
    """Digest of the text tower's weights (every non-visual parameter), its activation, its
    context length and the prompts."""
    from .identity import clip_activation
    h = hashlib.sha256()
    h.update(json.dumps([clip_activation(encoder),
                         int(getattr(encoder.model, 'context_length', 0))]).encode())
    for name, p in encoder.model.named_parameters():
        if name.startswith('visual.'):
            continue
        h.update(name.encode())
        h.update(p.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    h.update(json.dumps([queries, templates]).encode())
    return h.hexdigest()[:32]


def _encode_cached_on_disk(encoder, queries: List[str], templates: List[str]) -> torch.Tensor:
    folder = _disk_cache_dir(encoder)
    if folder is None:
        return encode_queries(encoder, queries, templates)
    from safetensors.torch import load_file, save_file

    from ..utils.atomic import atomic_write
    path = osp.join(folder, f'text_{_disk_key(encoder, queries, templates)}.safetensors')
    ref = next(encoder.parameters())
    if osp.isfile(path):
        try:
            return load_file(path)['embeddings'].to(device=ref.device, dtype=ref.dtype)
        except Exception:  # a corrupt cache file is recomputed, never fatal
            logger.warning('text-embedding cache file %s is unreadable; recomputing', path)
    emb = encode_queries(encoder, queries, templates)
    try:
        atomic_write(path, lambda tmp: save_file(
            {'embeddings': emb.detach().float().cpu().contiguous()}, tmp))
    except Exception as e:  # full disk (SafetensorError), read-only folder: still correct
        logger.warning('could not store text embeddings in %s (%s); continuing without the '
                       'disk cache', path, e)
    return emb


# encoder -> {(weights fingerprint, queries, templates): embeddings}; entries die with the encoder.
_CACHE: 'weakref.WeakKeyDictionary' = weakref.WeakKeyDictionary()


def _weights_key(encoder) -> tuple:
    # data_ptr changes when weights move or are replaced, _version on in-place loads.
    return tuple((p.data_ptr(), p._version, p.dtype, str(p.device)) for p in encoder.parameters())


class TextClassifier:
    """Text embeddings for a vocabulary, computed once per (encoder weights, names, templates).

    Attributes: ``vocabulary`` (:class:`~gpua_mmseg.vocabulary.Vocabulary`), ``class_names``
    (its nested form, list of synonym lists), ``queries`` (list[str], Q), ``query_to_class``
    (long tensor [Q]), ``num_classes`` (C), ``embeddings`` ([Q, dc], L2-normalised, on the
    encoder's device and dtype; computed on first access).
    """

    def __init__(self, encoder, class_names: ClassNames, templates='openai_imagenet'):
        self.encoder = encoder
        self.vocabulary = Vocabulary.parse(class_names)
        self.class_names = self.vocabulary.classes
        self.templates = resolve_templates(templates)
        self.queries = self.vocabulary.queries
        self.query_to_class = torch.tensor(self.vocabulary.query_to_class, dtype=torch.long)
        self.num_classes = len(self.vocabulary)

    @property
    def embeddings(self) -> torch.Tensor:
        per_enc: Dict = _CACHE.setdefault(self.encoder, {})
        wkey = _weights_key(self.encoder)
        key = (wkey, tuple(self.queries), tuple(self.templates))
        if key not in per_enc:
            for old in [k for k in per_enc if k[0] != wkey]:
                del per_enc[old]  # entries of older weights can never be hit again
            per_enc[key] = _encode_cached_on_disk(self.encoder, self.queries, self.templates)
        return per_enc[key]

    def class_scores(self, query_scores: torch.Tensor) -> torch.Tensor:
        """[..., Q] -> [..., C], max over each class's synonyms."""
        return class_scores(query_scores, self.query_to_class, self.num_classes)
