"""The one artifact identity: what an alignment map was fitted for, computed in one place.

An orthogonal map ``W`` is only meaningful for the exact pair of encoders (names *and* weights,
and the CLIP activation), the CLIP last-block variant (``clip_mode``), the prototype mode and the
vocabulary it was fitted with.  :func:`artifact_identity` returns that as a small JSON-able dict;
the fit pipeline and the demo store it in the artifact (``meta['identity']``),
:meth:`gpua_mmseg.alignment.AlignmentMap.check_identity` compares it on load, and
:func:`identity_key` (a hash of it) names the demo / API cache files, so that a map fitted with
random weights, other weights or another ``clip_mode`` is never picked up silently.
"""
import hashlib
import json
import weakref
from typing import Any, Dict, Optional

import torch

from ..vocabulary import Vocabulary, VocabularyLike

__all__ = ['IDENTITY_KEYS', 'artifact_identity', 'identity_key', 'weights_digest',
           'clip_activation']

#: Keys of an identity dict, in a fixed order.
IDENTITY_KEYS = ('vfm', 'vfm_weights', 'vlm', 'vlm_weights', 'vlm_activation', 'clip_mode',
                 'prototype_mode', 'vocab_hash')

# module -> (weights key, digest): hashing ViT-B weights costs ~1 s, do it once per weights.
_DIGESTS: 'weakref.WeakKeyDictionary' = weakref.WeakKeyDictionary()


def _weights_key(module: torch.nn.Module) -> tuple:
    # data_ptr changes when weights move or are replaced, _version on in-place loads.
    return tuple((n, t.data_ptr(), t._version, t.dtype, str(t.device))
                 for n, t in module.state_dict(keep_vars=True).items())


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 (16 hex) of every floating-point tensor of ``module``'s state dict, by name.

    Tensors are hashed as float32 on the CPU, so the digest does not depend on the device or
    on a ``.half()``; random initialisations of two runs differ unless seeded alike.
    """
    wkey = _weights_key(module)
    hit = _DIGESTS.get(module)
    if hit is not None and hit[0] == wkey:
        return hit[1]
    h = hashlib.sha256()
    with torch.no_grad():
        for name, t in sorted(module.state_dict().items()):
            if not torch.is_floating_point(t):
                continue
            h.update(f'{name}:{tuple(t.shape)};'.encode())
            h.update(t.detach().float().cpu().contiguous().reshape(-1).view(torch.uint8)
                     .numpy().tobytes())
    digest = h.hexdigest()[:16]
    _DIGESTS[module] = (wkey, digest)
    return digest


def clip_activation(clip_encoder) -> str:
    """``'quick_gelu'`` or ``'gelu'``: the MLP activation the CLIP model actually runs."""
    model = getattr(clip_encoder, 'model', clip_encoder)
    names = {type(m).__name__ for m in model.modules()}
    if 'QuickGELU' in names:
        return 'quick_gelu'
    if names & {'GELU', 'GELUTanh'}:
        return 'gelu'
    return 'quick_gelu' if getattr(clip_encoder, 'info', {}).get('quick_gelu') else 'gelu'


def artifact_identity(clip_encoder, vfm_encoder, clip_mode: Optional[str],
                      prototype_mode: Optional[str], vocabulary: VocabularyLike
                      ) -> Dict[str, Any]:
    """What an alignment map is fitted for.

    Args:
        clip_encoder: the :class:`~gpua_mmseg.models.clip.CLIPEncoder` (its ``info['name']``
            and weights are used).
        vfm_encoder: the :class:`~gpua_mmseg.models.vfm.VFMEncoder` (``name`` and weights).
        clip_mode: CLIP last-block variant key (``'sclip'``, ``'scclip'``, ...); ``None`` reads
            ``clip_encoder.mode``.
        prototype_mode: ``'query'`` or ``'class_mean'``.
        vocabulary: anything :meth:`Vocabulary.parse` accepts.

    Returns:
        ``dict(vfm, vfm_weights, vlm, vlm_weights, vlm_activation, clip_mode, prototype_mode,
        vocab_hash)``: names, 16-hex weight digests (:func:`weights_digest`), ``'quick_gelu'`` |
        ``'gelu'``, and :attr:`Vocabulary.hash`.
    """
    info = getattr(clip_encoder, 'info', {}) or {}
    return dict(
        vfm=str(getattr(vfm_encoder, 'name', type(vfm_encoder).__name__)),
        vfm_weights=weights_digest(vfm_encoder),
        vlm=str(info.get('name') or type(clip_encoder).__name__),
        vlm_weights=weights_digest(clip_encoder),
        vlm_activation=clip_activation(clip_encoder),
        clip_mode=clip_mode if clip_mode is not None else getattr(clip_encoder, 'mode', None),
        prototype_mode=prototype_mode,
        vocab_hash=Vocabulary.parse(vocabulary).hash)


def identity_key(identity: Dict[str, Any]) -> str:
    """16 hex characters naming an identity (cache file names)."""
    blob = json.dumps({k: identity.get(k) for k in IDENTITY_KEYS}, sort_keys=True)
    return hashlib.sha256(blob.encode('utf-8')).hexdigest()[:16]
