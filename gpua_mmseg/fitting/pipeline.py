"""Fit a GPUA / SOTAlign artifact for a GPUA config: build, extract (cached), fit, write.

:func:`run_fit` is what ``tools/fit_alignment.py`` calls; it is importable so that tests and
notebooks can drive the same code path (and share models) without a subprocess.
"""
import copy
import math
import warnings
import os.path as osp
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch

from ..models.identity import artifact_identity, weights_digest
from .cache import FeatureCache
from .extract import extract_image_features, preprocess_item
from .prototypes import PROTOTYPE_MODES, build_prototypes, labels_to_prototypes

__all__ = ['FitOptions', 'FitInterrupted', 'run_fit', 'build_fit_models', 'build_fit_dataset',
           'extract_to_cache', 'fit_from_cache', 'default_artifact_path']


class FitInterrupted(RuntimeError):
    """Raised by ``stop_after_shards`` (tests / debugging): the extraction stopped on purpose."""


@dataclass
class FitOptions:
    """Options of :func:`run_fit` (the CLI flags of ``tools/fit_alignment.py``).

    ``fit_cfg`` holds :class:`GPUAConfig` / :class:`SOTAlignConfig` field overrides.
    ``stop_after_shards`` makes the extraction raise :class:`FitInterrupted` after writing that
    many shards (simulates a killed job; a re-run resumes).
    """
    method: str = 'gpua'
    labeled: int = 0
    labeled_split: str = 'train'     # where --labeled images come from: 'train' | 'test'
    allow_test_labels: bool = False  # needed for labeled_split='test' (warning in the artifact)
    max_images: Optional[int] = None
    out: Optional[str] = None
    cache_dir: Optional[str] = None
    seed: int = 0
    device: Optional[str] = None
    prototype_mode: str = 'query'
    images_per_shard: int = 1
    cache_dtype: str = 'float16'
    rows_per_chunk: int = 65536
    diag_samples: int = 4096
    fit_cfg: Dict[str, Any] = field(default_factory=dict)
    config_path: Optional[str] = None
    stop_after_shards: Optional[int] = None
    rank: int = 0
    world_size: int = 1
    progress: bool = True
    plot: bool = True

    def validate(self) -> None:
        if self.method not in ('gpua', 'sotalign'):
            raise ValueError(f"--method must be 'gpua' or 'sotalign', got {self.method!r}")
        if self.method == 'sotalign' and int(self.labeled) < 1:
            raise ValueError('--method sotalign needs labelled images: pass --labeled N (N >= 1 '
                             'images whose masks give the (patch, class) pairs)')
        if self.method == 'sotalign':
            from .labeled_split import check_labeled_split
            check_labeled_split(self.labeled_split, self.allow_test_labels)
        if self.max_images is not None and int(self.max_images) < 1:
            raise ValueError(f'--max-images must be >= 1, got {self.max_images}')
        if self.prototype_mode not in PROTOTYPE_MODES:
            raise ValueError(f'prototype mode must be one of {PROTOTYPE_MODES}, got '
                             f'{self.prototype_mode!r}')
        self.fit_config()  # --fit-options checked before any dataset / model / extraction

    def fit_config(self):
        """The validated :class:`GPUAConfig` / :class:`SOTAlignConfig` of ``fit_cfg``.

        Raises:
            ValueError: an unknown field (the known ones listed) or a bad value (named).
        """
        from ..alignment import GPUAConfig, SOTAlignConfig
        from ..apis.fit import gpua_config_from_options
        cls = GPUAConfig if self.method == 'gpua' else SOTAlignConfig
        return gpua_config_from_options(dict(dict(device=self.device), **self.fit_cfg), cls)


def _plain(obj):
    """ConfigDict / tuples -> JSON-able plain containers."""
    if hasattr(obj, 'to_dict'):
        obj = obj.to_dict()
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):  # tuples stay tuples: transforms check for them
        return type(obj)(_plain(v) for v in obj)
    return obj


def default_artifact_path(cfg) -> str:
    head = (cfg.get('model') or {}).get('decode_head') or {}
    path = head.get('alignment_path')
    if not path:
        raise ValueError('the config has no model.decode_head.alignment_path (is it a GPUA '
                         'config, e.g. configs/gpua/gpua_scclip_dinov3_vitb16_voc21.py?); '
                         'pass --out PATH')
    return path


def build_fit_models(cfg, device: Optional[str] = None, seed: int = 0):
    """``(segmentor, vfm_encoder)`` from a GPUA config, without its decode head (the artifact
    does not exist yet).  Seeded first, so randomly initialised models are reproducible."""
    import gpua_mmseg.models  # noqa: F401  (mmcv-lite placeholder, registries)
    from mmseg.registry import MODELS

    from ..models.vfm import build_vfm_encoder
    model_cfg = copy.deepcopy(_plain(cfg.get('model')))
    if not model_cfg or model_cfg.get('type') != 'GPUASegmentor':
        raise ValueError("the config's model must be type='GPUASegmentor'")
    vfm_cfg = model_cfg.get('vfm')
    if not vfm_cfg:
        raise ValueError('the config has no model.vfm: GPUA fitting pairs CLIP with a VFM; use a '
                         'config from configs/gpua/ or add model.vfm=dict(name=..., pretrained=...)')
    from ..models.clip import mode_needs_vfm
    # ProxyCLIP's attention reads the VFM tokens: its segmentor keeps the VFM, and the fit uses
    # that very encoder (one model, one forward per crop for both CLIP and the GPUA rows)
    keep_vfm = mode_needs_vfm(model_cfg.get('clip_mode', 'sclip'))
    model_cfg['vfm'] = vfm_cfg if keep_vfm else None
    model_cfg['decode_head'] = None
    torch.manual_seed(seed)
    seg = MODELS.build(model_cfg)
    vfm = seg.vfm_encoder if keep_vfm else build_vfm_encoder(vfm_cfg)
    dev = torch.device(device) if device else torch.device('cpu')
    return seg.to(dev).eval(), vfm.to(dev).eval()


def build_fit_dataset(cfg, with_labels: bool):
    """The config's test dataset; without labels the ``LoadAnnotations`` step is dropped (GPUA
    needs images only, so an image folder without masks works)."""
    import gpua_mmseg.datasets  # noqa: F401
    import gpua_mmseg.models  # noqa: F401,I001
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    ds_cfg = copy.deepcopy(_plain(cfg.get('test_dataloader', {}).get('dataset')))
    if not ds_cfg:
        raise ValueError('the config has no test_dataloader.dataset to extract features from')
    root = ds_cfg.get('data_root')
    if root and not osp.isdir(root):
        raise FileNotFoundError(
            f'dataset folder {root!r} does not exist; prepare the dataset (MMSeg layout) or '
            'point the config at it: --cfg-options test_dataloader.dataset.data_root=/path')
    if not with_labels:
        ds_cfg['pipeline'] = [t for t in ds_cfg.get('pipeline', [])
                              if t.get('type') != 'LoadAnnotations']
    try:
        dataset = DATASETS.build(ds_cfg)
    except (FileNotFoundError, OSError) as e:
        raise FileNotFoundError(f'could not read the dataset ({e}); check '
                                'test_dataloader.dataset.data_root / ann_file') from e
    except ValueError as e:  # e.g. numpy on an empty image list
        raise ValueError(f'could not build the dataset {ds_cfg.get("type")} at {root!r} ({e}); '
                         'it seems to have no images: check ann_file / data_prefix') from e
    if len(dataset) == 0:
        raise ValueError(f'the dataset {ds_cfg.get("type")} at {root!r} has no images')
    return dataset, ds_cfg


def _progress(n: int, enabled: bool):
    if not enabled or n == 0:
        return None
    from mmengine.utils import ProgressBar
    return ProgressBar(n)


def _check_image_files(dataset, n_images: int) -> None:
    """Missing or empty (0-byte) image files of the first ``n_images`` items are named before
    any model is built (one ``stat`` each); undecodable ones are named when read
    (:func:`_dataset_item`)."""
    for i in range(n_images):
        try:
            path = dataset.get_data_info(i).get('img_path')
        except Exception:  # noqa: BLE001  (a dataset without paths: checked when read)
            return
        if not isinstance(path, str):
            return
        if not osp.isfile(path):
            raise FileNotFoundError(f'dataset image {path!r} (item {i}) does not exist; restore '
                                    'it or remove its entry from the split file')
        if osp.getsize(path) == 0:
            raise ValueError(f'cannot read dataset image {path!r} (item {i}): it is empty '
                             '(0 bytes); replace or remove it (and its entry in the split file)')


def _dataset_item(dataset, i: int):
    """``dataset[i]``; an image the loader cannot read (empty, truncated, not an image) is a
    ValueError naming the file and the fix, not a traceback from deep inside the pipeline."""
    try:
        return dataset[i]
    except Exception as e:  # noqa: BLE001  (cv2 / PIL / mmcv raise many types)
        try:
            info = dataset.get_data_info(i)
            path = info.get('img_path') or info
        except Exception:  # noqa: BLE001
            path = f'#{i}'
        size = ''
        if isinstance(path, str) and osp.isfile(path):
            size = ' (empty file, 0 bytes)' if osp.getsize(path) == 0 else ''
        raise ValueError(f'cannot read dataset image {path!r}{size}: {type(e).__name__}: '
                         f'{str(e).splitlines()[0] if str(e) else ""}; replace or remove it '
                         '(and its entry in the split file)') from None


def extract_to_cache(seg, vfm, dataset, cache: FeatureCache, with_labels: bool,
                     rank: int = 0, world_size: int = 1, progress: bool = True,
                     stop_after_shards: Optional[int] = None) -> List[int]:
    """Extract this rank's missing shards; returns the shard indices written now.

    A shard file that is corrupt (truncated by a crash or a full disk, edited) is named in a
    warning, removed and extracted again."""
    for s, problem in cache.drop_corrupt_shards(rank, world_size):
        warnings.warn(f'feature shard {cache.shard_path(s)} is corrupt ({problem}); '
                      're-extracting it', stacklevel=2)
    todo = cache.missing_shards(rank, world_size)
    bar = _progress(sum(len(cache.shard_images(s)) for s in todo), progress)
    written = []
    for s in todo:
        parts = dict(clip=[], vfm=[], image=[], label=[])
        for i in cache.shard_images(s):
            image01, label, _ = preprocess_item(seg, _dataset_item(dataset, i))
            if with_labels and label is None:
                raise ValueError(f'image {i} has no ground-truth mask, but --labeled needs masks '
                                 '(the test pipeline must contain LoadAnnotations)')
            f = extract_image_features(seg, vfm, image01, label if with_labels else None)
            for k in ('clip', 'vfm', 'label'):
                parts[k].append(f[k])
            parts['image'].append(torch.full((f['clip'].shape[0],), i, dtype=torch.long))
            if bar is not None:
                bar.update()
        cache.write_shard(s, **{k: torch.cat(v) for k, v in parts.items()})
        written.append(s)
        if stop_after_shards is not None and len(written) >= stop_after_shards:
            raise FitInterrupted(f'stopped after {len(written)} shard(s) on request; re-run to '
                                 f'resume ({cache})')
    return written


def _sample_rows(source, n_total: int, n_max: int):
    """Evenly strided sample of at most ``n_max`` rows from a chunk source (deterministic)."""
    step = max(1, math.ceil(n_total / max(1, n_max)))
    out, offset = None, 0
    for chunk in source():
        n = chunk[0].shape[0]
        idx = torch.arange((-offset) % step, n, step)
        part = [c[idx] for c in chunk]
        out = part if out is None else [torch.cat([a, b]) for a, b in zip(out, part)]
        offset += n
    return out


def _collect_pairs(cache: FeatureCache, n_labeled: int):
    vfm, clip, label = [], [], []
    for _, sh in cache.iter_shards():
        keep = (sh['image'] < n_labeled) & (sh['label'] >= 0)
        if bool(keep.any()):
            vfm.append(sh['vfm'][keep].float())
            clip.append(sh['clip'][keep].float())
            label.append(sh['label'][keep])
    if not vfm:
        raise ValueError(f'the first {n_labeled} image(s) have no labelled patch (all void?); '
                         'raise --labeled')
    return torch.cat(vfm), torch.cat(clip), torch.cat(label)


def fit_from_cache(seg, vfm, cache: FeatureCache, opts: FitOptions, meta: Dict[str, Any],
                   pairs=None):
    """Fit the map from the cached features (streamed; memory bounded). -> AlignmentMap.

    ``pairs``: SOTAlign's labelled ``(vfm, clip, label)`` rows from the train split; ``None``
    takes them from the first ``opts.labeled`` cached images (``labeled_split='test'``)."""
    from ..alignment import fit_gpua, fit_sotalign
    T, proto_names, q2p = build_prototypes(seg, opts.prototype_mode)
    meta = dict(meta, prototype_mode=opts.prototype_mode, prototype_names=proto_names)
    fit_cfg = opts.fit_config()
    if opts.method == 'gpua':
        return fit_gpua(cache.chunk_source(opts.rows_per_chunk), None, T, config=fit_cfg,
                        seed=opts.seed, meta=meta)
    pv, pc, pl = _collect_pairs(cache, int(opts.labeled)) if pairs is None else pairs
    q2c = seg.query_to_class.detach().cpu()
    proto = labels_to_prototypes(pl, pc, T, q2c, opts.prototype_mode)
    meta['n_labeled_images'] = int(opts.labeled)
    # the unpaired patches' CLIP features go with them: SOTAlign builds on GPUA's CLIP+VFM
    # correspondences
    return fit_sotalign(pv, proto, cache.chunk_source(opts.rows_per_chunk, keys=('vfm', 'clip')),
                        T, config=fit_cfg, seed=opts.seed, meta=meta)


def _checkpoint_info(seg, vfm) -> Dict[str, Any]:
    """Provenance of the encoders' weights (where they came from; the identity holds digests)."""
    info = dict(getattr(seg.clip_encoder, 'info', {}))
    clip = dict(name=info.get('name'), pretrained=info.get('pretrained'),
                format=info.get('format'), quick_gelu=info.get('quick_gelu'))
    return dict(vlm_checkpoint=_plain(clip), vfm_checkpoint=_plain(vfm.describe()))


def run_fit(cfg, opts: FitOptions) -> Optional[str]:
    """Extract (resumably) and fit; returns the artifact path (``None`` on ranks other than 0).

    Raises:
        ValueError / FileNotFoundError: bad config, options or dataset (no artifact written).
        FitInterrupted: ``opts.stop_after_shards`` reached.
    """
    opts.validate()
    out = opts.out or default_artifact_path(cfg)
    t0 = time.perf_counter()
    # labelled pairs from the evaluated split only on explicit request (labeled_split='test')
    with_labels = opts.method == 'sotalign' and opts.labeled_split == 'test'
    dataset, ds_cfg = build_fit_dataset(cfg, with_labels)
    n_images = len(dataset) if opts.max_images is None else min(len(dataset), opts.max_images)
    if with_labels and opts.labeled > n_images:
        raise ValueError(f'--labeled {opts.labeled} exceeds the {n_images} images used')
    _check_image_files(dataset, n_images)
    seg, vfm = build_fit_models(cfg, opts.device, opts.seed)
    fingerprint = dict(
        clip=_plain(cfg.model.get('clip')), clip_mode=cfg.model.get('clip_mode'),
        clip_mode_cfg=_plain(cfg.model.get('clip_mode_cfg')), vfm=_plain(cfg.model.get('vfm')),
        slide=[seg.slide_crop, seg.slide_stride], autocast=cfg.model.get('autocast_dtype'),
        preprocessor=_plain(cfg.model.get('data_preprocessor')), dataset=ds_cfg,
        with_labels=with_labels, weights=[weights_digest(seg.clip_encoder),
                                          weights_digest(vfm)])
    cache_root = opts.cache_dir or osp.join(osp.dirname(osp.abspath(out)), 'feature_cache')
    cache = FeatureCache(cache_root, fingerprint, n_images, opts.images_per_shard,
                         opts.cache_dtype, create=opts.rank == 0)
    if opts.world_size > 1:
        from mmengine.dist import barrier
        barrier()  # rank 0 has written the manifest
    t_extract = time.perf_counter()
    extract_to_cache(seg, vfm, dataset, cache, with_labels, opts.rank, opts.world_size,
                     opts.progress and opts.rank == 0, opts.stop_after_shards)
    if opts.world_size > 1:
        from mmengine.dist import barrier
        barrier()  # every rank's shards exist
    if opts.rank != 0:
        return None
    if not cache.is_complete():
        raise RuntimeError(f'feature cache {cache} is incomplete after extraction; re-run')
    t_extract = time.perf_counter() - t_extract
    vocab = seg.text_classifier.vocabulary
    clip_info = getattr(seg.clip_encoder, 'info', {})
    identity = artifact_identity(seg.clip_encoder, vfm, cfg.model.get('clip_mode'),
                                 opts.prototype_mode, vocab)
    meta = dict(
        identity=dict(identity, method=opts.method),
        vfm=vfm.name, vlm=clip_info.get('name'), clip_mode=cfg.model.get('clip_mode'),
        clip_mode_cfg=_plain(cfg.model.get('clip_mode_cfg')), vocabulary=vocab.classes,
        vocab_hash=vocab.hash, class_names=_plain(cfg.model.get('class_names')),
        dataset=dict(type=ds_cfg.get('type'), data_root=ds_cfg.get('data_root'),
                     ann_file=ds_cfg.get('ann_file')), n_images=int(n_images),
        config_file=opts.config_path, slide=[seg.slide_crop, seg.slide_stride],
        feature_cache=dict(key=cache.key, dtype=opts.cache_dtype), fit_seed=int(opts.seed),
        extract_seconds=t_extract, **_checkpoint_info(seg, vfm))
    pairs = None
    if opts.method == 'sotalign':
        from .labeled_split import TEST_LABELS_WARNING, collect_labeled_pairs, labeled_meta
        info = None
        if opts.labeled_split == 'train':
            *pairs, info = collect_labeled_pairs(seg, vfm, cfg, int(opts.labeled))
        else:
            warnings.warn(TEST_LABELS_WARNING)
        meta.update(labeled_meta(opts.labeled_split, info))
    amap = fit_from_cache(seg, vfm, cache, opts, meta, pairs)
    n_total = int(amap.meta.get('n_samples', 0)) or opts.diag_samples
    sample = _sample_rows(cache.chunk_source(opts.rows_per_chunk), n_total, opts.diag_samples)
    T, _, _ = build_prototypes(seg, opts.prototype_mode)
    from .diagnostics import alignment_diagnostics, plot_diagnostics
    amap.meta['diagnostics'] = alignment_diagnostics(amap, sample[0], sample[1], T)
    amap.meta['wall_seconds'] = time.perf_counter() - t0
    amap.save(out)  # atomic, and first: an optional plot that fails must not lose the fit
    if opts.plot:
        try:
            plot_diagnostics(diagnostics_path(out), amap, sample[0], sample[1], T,
                             title=f'{opts.method}: {vfm.name} -> {clip_info.get("name")}')
        except Exception as e:  # disk full, no matplotlib backend, ...: optional output
            warnings.warn(f'the diagnostics plot {diagnostics_path(out)} was not written ({e}); '
                          f'the artifact {out} is complete', stacklevel=2)
    return out


def diagnostics_path(artifact_path: str) -> str:
    return osp.splitext(artifact_path)[0] + '_diagnostics.png'
