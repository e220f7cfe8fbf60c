"""Fitting a GPUA map for the current vocabulary on a handful of images (demo ``--fit``).

Uses the library pieces that exist: :func:`gpua_mmseg.fitting.extract.extract_image_features`
(the segmentor's own sliding-window crops), :func:`gpua_mmseg.fitting.prototypes.build_prototypes`
and :func:`gpua_mmseg.alignment.fit_gpua`.  Unsupervised: no labels are needed.
"""
import logging
import os.path as osp
import time
from typing import Any, Dict, Iterable, Optional

import torch

__all__ = ['default_alignment_path', 'fit_alignment_on_images', 'install_alignment',
           'gpua_config_from_options']

logger = logging.getLogger(__name__)
#: Prototypes of demo fits: one per query (synonym), as in tools/fit_alignment.py's default.
PROTOTYPE_MODE = 'query'


def default_alignment_path(seg) -> str:
    """``$GPUA_MMSEG_CACHE/alignments/<config>_<identity key>.safetensors``: the demo's cached
    map for ``seg``'s config, encoders (names, weights, activation), ``clip_mode`` and current
    vocabulary (:func:`gpua_mmseg.models.identity.identity_key`), so a map fitted for other
    weights or another vocabulary is never picked up."""
    from ..models.identity import identity_key
    from ..weights import cache_dir
    stem = osp.splitext(osp.basename(seg.config_path))[0]
    return osp.join(cache_dir(), 'alignments',
                    f'{stem}_{identity_key(seg.identity(PROTOTYPE_MODE))}.safetensors')


def install_alignment(seg, path: str, vocabulary_must_match: bool = True) -> None:
    """Build the config's ``GPUAHead`` on ``path``, check it and attach it (with the VFM) to
    ``seg.model`` (:meth:`GPUASegmentor.attach_gpua`).

    Args:
        vocabulary_must_match: False accepts a map fitted for another vocabulary (it still
            runs, off-distribution; the caller warns).

    Raises:
        ValueError: a corrupt artifact, or one fitted for other encoders / weights /
            ``clip_mode`` (or vocabulary); the message lists every mismatch and the refit.
    """
    from mmseg.registry import MODELS
    if seg.head_cfg is None:
        raise ValueError(f'config {seg.config_path} is not a GPUA config (no decode_head); use a '
                         'gpua_* config to load an alignment')
    head = MODELS.build(dict(seg.head_cfg, alignment_path=path))
    vfm = seg.vfm_encoder()
    expected = seg.identity(None)
    if not vocabulary_must_match:
        expected.pop('vocab_hash')
    head.validate(dv=vfm.embed_dim, dc=seg.model.clip_encoder.embed_dim, identity=expected)
    seg.model.attach_gpua(vfm, head, check=False)
    seg.alignment_problem = None


def gpua_config_from_options(options: Optional[Dict[str, Any]], cls=None):
    """``--fit-options`` -> a validated :class:`gpua_mmseg.alignment.GPUAConfig` (or ``cls``,
    e.g. :class:`SOTAlignConfig`), before any model is built or feature extracted.

    Raises:
        ValueError: an unknown field (the known ones are listed) or a bad value (named).
    """
    if cls is None:
        from ..alignment import GPUAConfig as cls
    options = dict(options or {})
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f'unknown {cls.__name__} fields {unknown} in --fit-options; the '
                         f'fields are {sorted(known)}')
    try:
        cfg = cls(**options)
        cfg.validate()
    except (TypeError, ValueError) as e:
        raise ValueError(f'invalid --fit-options {options}: {e}') from None
    return cfg


#: Encoder outputs kept for reuse (``keep_features``) up to this many bytes in all; the images
#: beyond are segmented with a fresh forward.
KEEP_FEATURES_MAX_BYTES = 2 << 30


def _nbytes(crops) -> int:
    return sum(t.numel() * t.element_size() for batch in crops for t in batch if t is not None)


def fit_alignment_on_images(seg, images: Iterable, out_path: Optional[str] = None,
                            config: Optional[Dict[str, Any]] = None, seed: int = 0,
                            keep_features: Optional[list] = None) -> str:
    """Fit an unsupervised GPUA map on ``images`` for ``seg``'s current vocabulary, save it and
    install it into ``seg``.

    The artifact records the identity (:meth:`OpenVocabSegmenter.identity`) and the
    vocabulary in its canonical nested form, so ``--alignment`` with that file works later.

    Args:
        seg: an :class:`OpenVocabSegmenter` built from a GPUA config.
        images: paths / PIL images / uint8 arrays (a few dozen are plenty for a demo).
        out_path: artifact file; default :func:`default_alignment_path`.
        config: :class:`gpua_mmseg.alignment.GPUAConfig` fields to override (checked before
            any feature is extracted).
        seed: makes the fit deterministic.
        keep_features: a list that receives, per image in the order of ``images``, what the
            extraction computed (``extract_image_features(..., keep_crops=True)['crops']``,
            ``None`` beyond :data:`KEEP_FEATURES_MAX_BYTES`): ``seg(image, features=...)``
            then segments that image without running the encoders again.

    Returns:
        The artifact path.

    Raises:
        ValueError: not a GPUA config, bad ``config`` fields, no images, or fewer patch rows
            than text queries.
    """
    from ..alignment import GPUAConfig, fit_gpua
    from ..fitting.extract import extract_image_features
    from ..fitting.prototypes import build_prototypes
    from .segmenter import load_image
    if seg.head_cfg is None:
        raise ValueError(f'--fit needs a GPUA config (with vfm= and decode_head=); '
                         f'{seg.config_path} is CLIP-only')
    cfg = gpua_config_from_options(config, GPUAConfig)
    out_path = out_path or default_alignment_path(seg)
    m, vfm = seg.model, seg.vfm_encoder()
    t0 = time.perf_counter()
    clip_rows, vfm_rows = [], []
    kept = 0
    with torch.no_grad():
        for img in images:
            x = seg._prepare(load_image(img))[0] / 255.0
            feats = extract_image_features(m, vfm, x.to(m.clip_encoder.mean.device),
                                           keep_crops=keep_features is not None)
            clip_rows.append(feats['clip'].float().cpu())
            vfm_rows.append(feats['vfm'].float().cpu())
            if keep_features is not None:
                crops = feats['crops']
                kept += _nbytes(crops)
                keep_features.append(crops if kept <= KEEP_FEATURES_MAX_BYTES else None)
    if not clip_rows:
        raise ValueError('--fit needs at least one image to fit on')
    t_extract = time.perf_counter() - t0
    T, _, _ = build_prototypes(m, PROTOTYPE_MODE)
    n_rows = sum(r.shape[0] for r in clip_rows)
    if n_rows < T.shape[0]:
        raise ValueError(f'--fit has only {n_rows} patches from {len(clip_rows)} image(s) for '
                         f'{T.shape[0]} text queries (classes and synonyms): it needs at least '
                         'one patch per query; give more or larger images, or fewer classes')
    vocab = seg.vocabulary
    identity = seg.identity(PROTOTYPE_MODE)
    meta = dict(identity=dict(identity, method='gpua'), vfm=identity['vfm'],
                vlm=identity['vlm'], clip_mode=identity['clip_mode'],
                prototype_mode=PROTOTYPE_MODE, fit_images=len(clip_rows), source='demo --fit',
                config=seg.config_path, vfm_checkpoint=vfm.describe(),
                extract_seconds=t_extract)
    amap = fit_gpua(torch.cat(vfm_rows), torch.cat(clip_rows), T, cfg, seed=seed,
                    vocabulary=vocab.classes, meta=meta)
    amap.save(out_path)
    logger.info('fitted GPUA on %d images (%d patches) in %.1f s -> %s', len(clip_rows),
                sum(r.shape[0] for r in clip_rows), time.perf_counter() - t0, out_path)
    install_alignment(seg, out_path)
    return out_path
