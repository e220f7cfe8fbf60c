"""Zero-shot text classifier: one L2-normalised CLIP text embedding per query name.

The vocabulary (``class_names`` in the model config) is anything
:meth:`gpua_mmseg.vocabulary.Vocabulary.parse` accepts: a shipped key (``'voc21'``), a class-name
file, a ``"cat, kitty; sofa"`` text or a list of names / synonym lists (one rule for all of
them, see :mod:`gpua_mmseg.vocabulary`).

Each synonym is its own query; a class's score is the max over its queries (:meth:`class_scores`).
Embeddings: per query, all templates are encoded, each is L2-normalised, they are averaged and
the mean is renormalised (prompts run in length-sorted batches through the encoder's short text
forward, :meth:`~gpua_mmseg.models.clip.CLIPEncoder.encode_text`).  They are computed once per
process per (text tower, queries, templates): the in-process cache is keyed by a digest of the
text tower's weights *and* its activation (:func:`text_tower_digest`; the same weights under
GELU and QuickGELU give different embeddings), not by the encoder object, so a fit and a model
(or two segmentors) built on the same weights share one encoding, seeded random weights
included.  For pretrained weights they are also kept on disk
(``$GPUA_MMSEG_CACHE/text_embeddings``, same digest), because 80 templates x ~60 queries take
a minute or more on a CPU and every ``tools/test.py`` run would otherwise pay them again;
``GPUA_MMSEG_TEXT_CACHE=0`` turns this off.  The disk cache is best-effort: an unreadable or
unwritable entry (full disk, read-only folder) is recomputed, never fatal.
"""
import hashlib
import json
import logging
import os
import os.path as osp
import weakref
from collections import OrderedDict
from typing import List, Optional, Union

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


class TextTruncationWarning(UserWarning):
    """Some prompts of a vocabulary do not fit the CLIP text context and were cut."""


def check_truncation(encoder, vocabulary: VocabularyLike, templates: List[str],
                     warn: bool = True, tokens: Optional[torch.Tensor] = None) -> List[str]:
    """Find the queries whose prompts are longer than the text context (the tokenizer cuts
    them silently) and those that become identical once cut (the same embedding: a later
    class tied with an earlier one is never predicted).

    Args:
        encoder: a :class:`~gpua_mmseg.models.clip.CLIPEncoder` (``tokenize``, ``token_count``).
        vocabulary: anything :meth:`Vocabulary.parse` accepts.
        templates: the prompt templates (``'{}'`` placeholders).
        warn: issue one :class:`TextTruncationWarning` listing them all (when there are any).
        tokens: the prompts already tokenized ([Q * T, ctx], query-major), if at hand.

    Returns:
        One line per truncated query (naming its class, the query, its token count and the
        context length) and per pair that became identical; empty when all fit.
    """
    vocab = Vocabulary.parse(vocabulary)
    queries, q2c, names = vocab.queries, vocab.query_to_class, vocab.names
    nt = len(templates)
    if tokens is None:
        tokens = encoder.tokenize([t.format(q) for q in queries for t in templates])
    ctx = int(tokens.shape[1])
    filled = (tokens[:, -1] != 0).reshape(len(queries), nt)  # the last slot used: maybe cut
    count = getattr(encoder, 'token_count', lambda text: None)
    lines, cut = [], set()
    for qi in filled.any(1).nonzero()[:, 0].tolist():
        q = queries[qi]
        n = [count(templates[ti].format(q)) for ti in filled[qi].nonzero()[:, 0].tolist()]
        n = [c for c in n if c is None or c > ctx]  # exactly ctx tokens still fit
        if not n:
            continue
        cut.add(qi)
        most = max((c for c in n if c is not None), default=None)
        size = f'{most} tokens' if most is not None else f'more than {ctx} tokens'
        who = f'class {names[q2c[qi]]!r}' + (f' (query {q!r})' if q != names[q2c[qi]] else '')
        lines.append(f'{who}: its longest prompt has {size}, {len(n)} of {nt} prompt(s) cut to '
                     f'the text context of {ctx} tokens')
    rows = tokens.reshape(len(queries), -1)
    seen = {}
    for qi in sorted(cut):
        key = tuple(rows[qi].tolist())
        if key not in seen:
            seen[key] = qi
            continue
        a, b = seen[key], qi
        if q2c[a] == q2c[b]:
            why = f'synonyms of class {names[q2c[a]]!r}: one of them is redundant'
        else:
            why = (f'the same embedding: query {queries[b]!r} can never make class '
                   f'{names[q2c[b]]!r} win over class {names[q2c[a]]!r}')
        lines.append(f'queries {queries[a]!r} and {queries[b]!r} are identical after '
                     f'truncation ({why})')
    if lines and warn:
        import warnings
        warnings.warn('class names too long for the CLIP text context; shorten them (their '
                      'prompts are cut, the text after the cut is ignored): ' + '; '.join(lines),
                      TextTruncationWarning, stacklevel=3)
    return lines


@torch.no_grad()
def encode_queries(encoder, queries: List[str], templates: List[str], batch_size: int = 512,
                   tokens: Optional[torch.Tensor] = None) -> torch.Tensor:
    """-> [Q, dc]: per query mean of L2-normalised template embeddings, renormalised.

    ``tokens``: the prompts already tokenized ([Q * T, ctx], query-major), if at hand."""
    texts = [t.format(q) for q in queries for t in templates]
    if tokens is None:
        tokens = encoder.tokenize(texts)
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


# encoder -> (weights key, digest): hashing ViT-B's text tower costs ~1 s, once per weights.
_TOWER_DIGESTS: 'weakref.WeakKeyDictionary' = weakref.WeakKeyDictionary()


def text_tower_digest(encoder) -> str:
    """sha256 (32 hex) of what the text embeddings depend on: every non-visual parameter (by
    name, bytes as stored), the MLP activation, the context length and the tokenizer class.

    The same weights under GELU and QuickGELU give different embeddings, so the activation is
    part of it.  Memoised per encoder until its weights move or change in place.
    """
    from .identity import clip_activation
    wkey = _weights_key(encoder)
    hit = _TOWER_DIGESTS.get(encoder)
    if hit is not None and hit[0] == wkey:
        return hit[1]
    h = hashlib.sha256()
    tok = getattr(encoder, '_tokenizer', None)  # None: open_clip's SimpleTokenizer, built lazily
    h.update(json.dumps([clip_activation(encoder), int(getattr(encoder.model, 'context_length', 0)),
                         type(tok).__name__ if tok is not None else 'SimpleTokenizer']).encode())
    with torch.no_grad():
        for name, p in encoder.model.named_parameters():
            if name.startswith('visual.'):
                continue
            h.update(name.encode())
            h.update(p.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    digest = h.hexdigest()[:32]
    _TOWER_DIGESTS[encoder] = (wkey, digest)
    return digest


def _disk_key(encoder, queries: List[str], templates: List[str]) -> str:
    """Digest of the text tower (:func:`text_tower_digest`) and the prompts."""
    h = hashlib.sha256(text_tower_digest(encoder).encode())
    h.update(json.dumps([queries, templates]).encode())
    return h.hexdigest()[:32]


def _encode_cached_on_disk(encoder, queries: List[str], templates: List[str],
                           tokens: Optional[torch.Tensor] = None) -> torch.Tensor:
    folder = _disk_cache_dir(encoder)
    if folder is None:
        return encode_queries(encoder, queries, templates, tokens=tokens)
    from safetensors.torch import load_file, save_file

    from ..utils.atomic import atomic_write
    path = osp.join(folder, f'text_{_disk_key(encoder, queries, templates)}.safetensors')
    ref = next(encoder.parameters())
    if osp.isfile(path):
        try:
            return load_file(path)['embeddings'].to(device=ref.device, dtype=ref.dtype)
        except Exception:  # a corrupt cache file is recomputed, never fatal
            logger.warning('text-embedding cache file %s is unreadable; recomputing', path)
    emb = encode_queries(encoder, queries, templates, tokens=tokens)
    try:
        atomic_write(path, lambda tmp: save_file(
            {'embeddings': emb.detach().float().cpu().contiguous()}, tmp))
    except Exception as e:  # full disk (SafetensorError), read-only folder: still correct
        logger.warning('could not store text embeddings in %s (%s); continuing without the '
                       'disk cache', path, e)
    return emb


# (text tower digest, queries, templates, device, dtype) -> embeddings, for the whole process:
# two segmentors / a fit and a model built on the same weights (also seeded random ones) share
# one encoding.  Least recently used entries go first; each is only [Q, dc].
_CACHE: 'OrderedDict[tuple, torch.Tensor]' = OrderedDict()
_CACHE_SIZE = 64


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
        ref = next(self.encoder.parameters())
        key = (text_tower_digest(self.encoder), tuple(self.queries), tuple(self.templates),
               str(ref.device), ref.dtype)
        emb = _CACHE.get(key)
        if emb is None:
            other = next((v for k, v in _CACHE.items() if k[:3] == key[:3] and k[4] == ref.dtype),
                         None)  # the same encoding on another device: moved, not recomputed
            if other is not None:
                emb = other.to(ref.device)
            else:
                tokens = self.encoder.tokenize([t.format(q) for q in self.queries
                                                for t in self.templates])
                check_truncation(self.encoder, self.vocabulary, self.templates, tokens=tokens)
                emb = _encode_cached_on_disk(self.encoder, self.queries, self.templates, tokens)
            _CACHE[key] = emb
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
        _CACHE.move_to_end(key)
        return emb

    def class_scores(self, query_scores: torch.Tensor) -> torch.Tensor:
        """[..., Q] -> [..., C], max over each class's synonyms."""
        return class_scores(query_scores, self.query_to_class, self.num_classes)
