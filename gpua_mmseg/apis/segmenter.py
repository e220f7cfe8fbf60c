"""OpenVocabSegmenter: one image (or a folder) in, label map + scores + overlay out.

    from gpua_mmseg.apis import OpenVocabSegmenter
    seg = OpenVocabSegmenter('sclip', classes='cat, kitty; sofa; background')
    result = seg('photo.jpg')            # path | PIL image | HxWx3 uint8 RGB array
    result.labels                        # [H, W] int64 class indices
    result.overlay().save('overlay.png') # photo + colours + legend
    seg.set_classes(['dog', 'grass', 'background'])   # new vocabulary, cached per vocabulary

The image goes through the config's test-time resize (short side 336 for the VOC configs, cv2
bilinear as in MMSeg) and the segmentor's sliding-window inference; predictions come back at the
original image size.
"""
import logging
import os
import os.path as osp
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch

from ..vocabulary import Vocabulary
from .configs import resize_scale_of, resolve_config
from .io import IMAGE_EXTENSIONS, list_images, load_image

__all__ = ['OpenVocabSegmenter', 'SegResult', 'ManyReport', 'load_image', 'list_images',
           'IMAGE_EXTENSIONS']

logger = logging.getLogger(__name__)


@dataclass
class SegResult:
    """Prediction for one image.

    Attributes:
        labels: ``[H, W]`` int64 class indices at the original image size.
        scores: ``[C, H, W]`` float32 class probabilities (softmax over queries, max over
            synonyms; before thresholds).
        classes: the vocabulary, ``C`` synonym lists; ``names`` = first synonyms.
        image: the ``[H, W, 3]`` uint8 RGB input (for overlays).
    """
    labels: np.ndarray
    scores: np.ndarray
    classes: List[List[str]]
    image: np.ndarray
    seconds: float = 0.0

    @property
    def names(self) -> List[str]:
        return [syns[0] for syns in self.classes]

    def overlay_with_legend(self, alpha: float = 0.5, legend: bool = True):
        """-> ``(PIL image, legend entries)``; see :func:`gpua_mmseg.vis.render_overlay`."""
        from ..vis import render_overlay
        return render_overlay(self.image, self.labels, self.names, alpha=alpha, legend=legend)

    def overlay(self, alpha: float = 0.5, legend: bool = True):
        """Photo with class colours blended in (opacity ``alpha``) and a legend panel on the
        right listing every class name (with its pixel share); PIL RGB image."""
        return self.overlay_with_legend(alpha, legend)[0]

    def label_image(self):
        """Raw label map as a PIL image: 8-bit grey (``C <= 256``) or 16-bit (``C > 256``)."""
        from .io import label_map_image
        return label_map_image(self.labels, len(self.classes))


@dataclass
class ManyReport:
    """Outcome of :meth:`OpenVocabSegmenter.segment_many`."""
    paths: List[str]
    results: List[SegResult] = field(default_factory=list)
    seconds: float = 0.0
    #: ``(path, reason)`` of the images that could not be read (skipped, see ``segment_many``)
    skipped: List[Tuple[str, str]] = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        return len(self.paths) / self.seconds if self.seconds > 0 else float('inf')


def _without_delete_markers(obj):
    """MMEngine keeps ``_delete_=True`` in a dict that replaced a non-dict base value (the
    CLIP-only base's ``vfm=None``); builders must not see it."""
    if isinstance(obj, dict):
        return {k: _without_delete_markers(v) for k, v in obj.items() if k != '_delete_'}
    if isinstance(obj, list):
        return [_without_delete_markers(v) for v in obj]
    return obj


def _pick_device(device) -> torch.device:
    if device is None:
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    return torch.device(device)


class OpenVocabSegmenter:
    """Training-free open-vocabulary segmentation of single images with a runtime vocabulary.

    Args:
        config_or_name: ``'sclip'`` | ``'scclip'`` | ``'gpua_scclip'`` | any short name under
            ``configs/`` | a config file path.  Only the ``model`` part and the test resize are
            used; the config's dataset vocabulary is replaced by ``classes``.
        classes: anything :meth:`gpua_mmseg.vocabulary.Vocabulary.parse` accepts, e.g.
            ``"cat, kitty; sofa; background"`` or ``['cat', ['sofa', 'couch']]``.  A class
            named ``background`` becomes the threshold fallback (``bg_idx``); without one,
            ``prob_thd`` is switched off.
        device: ``None`` (CUDA if available, else CPU), or any torch device string.
        weights: ``None`` (resolve the config's weights locally first; see
            :mod:`gpua_mmseg.weights`), ``'random'`` (random init, seeded with ``seed`` so that
            two runs build the same model: pipeline tests only) or ``dict(clip=path, vfm=path)``.
        cfg_options: dotted overrides merged into the config, e.g.
            ``{'model.slide_stride': 224}``.
        alignment: GPUA configs only: artifact path replacing ``decode_head.alignment_path``.
        require_alignment: GPUA configs only.  True: the artifact must exist and match the
            model (encoders, weights, activation, ``clip_mode``; a different vocabulary only
            warns).  False (demo ``--fit``): a missing or mismatching artifact leaves the model
            CLIP-only until :func:`gpua_mmseg.apis.fit.fit_alignment_on_images` attaches a
            fitted head; :attr:`alignment_problem` says why.
        seed: seed of randomly initialised encoders.

    Raises:
        gpua_mmseg.weights.WeightsNotFoundError: weights missing while offline.
        ValueError / FileNotFoundError: bad vocabulary / config, or (``require_alignment``)
            a missing or mismatching artifact.
    """

    def __init__(self, config_or_name: str = 'sclip',
                 classes: Union[str, List, Vocabulary] = 'background; person; cat; dog',
                 device=None, weights=None, cfg_options: Optional[Dict[str, Any]] = None,
                 alignment: Optional[str] = None, require_alignment: bool = True,
                 seed: int = 0):
        from mmengine.config import Config

        from ..weights import apply_weights

        self.config_path = resolve_config(config_or_name)
        # Heavy model imports wait until the weights are known to exist (fail fast offline).
        cfg = Config.fromfile(self.config_path, import_custom_modules=False)
        if cfg_options:
            cfg.merge_from_dict(dict(cfg_options))
        self.cfg = cfg
        self.resize_scale = resize_scale_of(cfg)
        self.weights = weights
        self.seed = int(seed)
        vocab = Vocabulary.parse(classes)
        model_cfg = _without_delete_markers(cfg.to_dict()['model'])
        # Thresholds are the config's; whether prob_thd applies depends on the vocabulary.
        self._prob_thd = float(model_cfg.get('prob_thd', 0.0))
        model_cfg.update(class_names=vocab.classes, bg_idx='auto',
                         prob_thd=self._prob_thd if vocab.background_index is not None else 0.0)
        model_cfg = apply_weights(model_cfg, weights)
        self.head_cfg = model_cfg.get('decode_head')
        self._vfm_cfg = model_cfg.get('vfm')
        self._pending_vfm = None
        self.alignment_problem: Optional[str] = None
        if self.head_cfg is not None:
            self.head_cfg = dict(self.head_cfg, config_path=self.config_path)
            if alignment is not None:
                self.head_cfg['alignment_path'] = os.fspath(alignment)
        # The head (and GPUA's VFM) are attached after the identity check (below), never by
        # the build; a clip_mode whose attention reads VFM tokens (ProxyCLIP) keeps its VFM.
        from ..models.clip import mode_needs_vfm
        keep_vfm = mode_needs_vfm(model_cfg.get('clip_mode', 'sclip'))
        self.model_cfg = dict(model_cfg, vfm=model_cfg.get('vfm') if keep_vfm else None,
                              decode_head=None)
        import gpua_mmseg.models  # noqa: F401  (mmcv-lite placeholder before mmseg)
        from mmseg.registry import MODELS
        self.device = _pick_device(device)
        torch.manual_seed(self.seed)  # random-init encoders: the same model in every run
        self.model = MODELS.build(self.model_cfg).eval().to(self.device)
        if hasattr(self.model, '_prob_thd_cfg'):
            # the configured threshold, for later vocabularies that do have a background class
            self.model._prob_thd_cfg = self._prob_thd
        self.vocabulary: Vocabulary = vocab
        self.model.get_text_embeddings()
        if self.head_cfg is not None:
            self._attach_config_alignment(config_or_name, require_alignment)

    # ------------------------------------------------------------------ GPUA
    def _attach_config_alignment(self, config_or_name: str, required: bool) -> None:
        from .fit import install_alignment
        art = osp.abspath(osp.expanduser(str(self.head_cfg.get('alignment_path', ''))))
        if not osp.isfile(art):
            self.alignment_problem = f'the GPUA alignment artifact {art} does not exist'
            if required:
                raise FileNotFoundError(
                    f'GPUA alignment artifact {art!r} (config {self.config_path}) does not '
                    'exist. Fit one for your vocabulary: tools/demo.py IMAGES --config '
                    f'{config_or_name} --classes "..." --fit, or tools/fit_alignment.py; or '
                    'pass alignment=/path/to/artifact.safetensors')
            return
        try:
            install_alignment(self, art, vocabulary_must_match=False)
        except ValueError as e:
            if required:
                raise
            self.alignment_problem = str(e)
            return
        if not self.gpua_vocabulary_matches():
            self._warn_vocabulary()

    def identity(self, prototype_mode: str = 'query') -> Dict[str, Any]:
        """The artifact identity a GPUA map for this model and vocabulary must have
        (:func:`gpua_mmseg.models.identity.artifact_identity`)."""
        from ..models.identity import artifact_identity
        return artifact_identity(self.model.clip_encoder, self.vfm_encoder(),
                                 self.model.clip_mode, prototype_mode, self.vocabulary)

    @property
    def is_gpua(self) -> bool:
        """True when a GPUA head is attached (a GPUA config awaiting ``--fit`` is not yet)."""
        return getattr(self.model, 'decode_head', None) is not None

    def vfm_encoder(self):
        """The model's VFM encoder, built from the config on first use when the head is still
        pending (GPUA configs only)."""
        if getattr(self.model, 'vfm_encoder', None) is not None:
            return self.model.vfm_encoder
        if self._vfm_cfg is None:
            raise ValueError(f'config {self.config_path} has no vfm= (not a GPUA config)')
        from ..models.vfm import build_vfm_encoder
        if self._pending_vfm is None:
            torch.manual_seed(self.seed + 1)  # random-init VFM: the same in every run
            self._pending_vfm = build_vfm_encoder(self._vfm_cfg).eval().to(self.device)
        return self._pending_vfm

    def gpua_vocabulary_matches(self) -> Optional[bool]:
        """For a GPUA model: was the attached map fitted for the current vocabulary?
        ``None`` for CLIP-only models."""
        if not self.is_gpua:
            return None
        ident = self.model.decode_head.amap.identity or {}
        have = ident.get('vocab_hash', self.model.decode_head.meta.get('vocab_hash'))
        return have == self.vocabulary.hash

    def _warn_vocabulary(self) -> None:
        warnings.warn(
            f'GPUA alignment {self.model.decode_head.alignment_path} was fitted for another '
            f'vocabulary than {self.vocabulary.text()!r}. Predictions still run but the GPUA '
            'part is off-distribution: refit (tools/demo.py --fit, or tools/fit_alignment.py) '
            'for this vocabulary.', stacklevel=3)

    # ------------------------------------------------------------------ vocabulary
    @property
    def classes(self) -> List[List[str]]:
        """The current vocabulary's nested form (one synonym list per class)."""
        return self.vocabulary.classes

    def set_classes(self, classes) -> 'OpenVocabSegmenter':
        """Switch to a new vocabulary (same forms as ``classes`` in the constructor).

        Text embeddings are cached per vocabulary (see
        :class:`gpua_mmseg.models.text_classifier.TextClassifier`): switching back to an
        earlier vocabulary costs no text-encoder call.  Returns ``self``.
        """
        vocab = Vocabulary.parse(classes)
        self.model.set_vocabulary(vocab, bg_idx='auto')
        self.model.get_text_embeddings()  # encoded now (once per vocabulary), not mid-image
        self.vocabulary = vocab
        if self.gpua_vocabulary_matches() is False:
            self._warn_vocabulary()
        return self

    @property
    def names(self) -> List[str]:
        """Display names (first synonyms) of the current vocabulary."""
        return self.vocabulary.names

    # ------------------------------------------------------------------ inference
    def _prepare(self, rgb: np.ndarray) -> torch.Tensor:
        import mmcv
        long_max, short = self.resize_scale
        # Same rule and interpolation as MMSeg's Resize(keep_ratio=True) in the test pipeline.
        resized = mmcv.imrescale(rgb, (long_max, short), interpolation='bilinear',
                                 backend='cv2')
        x = torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1)[None]
        return x.to(self.device, torch.float32)

    @torch.no_grad()
    def __call__(self, image, features=None) -> SegResult:
        """Segment one image (path, PIL image or ``[H, W, 3]`` uint8 RGB array).

        ``features``: the encoders' outputs of this very image under this model, as
        :func:`~gpua_mmseg.apis.fit.fit_alignment_on_images` keeps them (``keep_features``);
        the result is then computed from them without running the encoders (the same logits,
        stitching and post-processing).  Ignored (a fresh forward) with test-time
        augmentation, or when ``None``.
        """
        from mmseg.structures import SegDataSample
        t0 = time.perf_counter()
        rgb = load_image(image)
        if min(rgb.shape[:2]) < 1:
            raise ValueError(f'empty image of shape {rgb.shape}')
        x = self._prepare(rgb)
        meta = dict(img_shape=tuple(x.shape[-2:]), ori_shape=rgb.shape[:2])
        if features is not None and self.model.tta_views() == [(1.0, False)]:
            m = self.model
            image01 = m._valid_images(x, [meta])[0]
            logits = m.logits_from_crop_features([image01], features)[0]
            scores_t, labels_t = m.postprocess_one(image01, logits, meta)
        else:
            out = self.model.predict(x, [SegDataSample(metainfo=meta)])[0]
            scores_t, labels_t = out.seg_logits.data, out.pred_sem_seg.data[0]
        labels = labels_t.cpu().numpy().astype(np.int64)
        scores = scores_t.float().cpu().numpy()
        return SegResult(labels=labels, scores=scores, classes=self.vocabulary.classes,
                         image=rgb, seconds=time.perf_counter() - t0)

    segment = __call__

    def iter_segment(self, paths) -> Iterator[Tuple[str, SegResult]]:
        """Yield ``(path, result)`` for a folder / file / list of those, one image at a time."""
        for p in list_images(paths):
            yield p, self(p)

    def segment_many(self, paths, on_result: Optional[Callable[[str, SegResult], None]] = None,
                     keep: bool = True, skip_unreadable: bool = True) -> ManyReport:
        """Segment a folder or a list of images; the text classifier is reused for all of them.

        Args:
            paths: folder, file, or list of those.
            on_result: called as ``on_result(path, result)`` after each image (e.g. to save).
            keep: keep the results in the report (False for long folders).
            skip_unreadable: an image file that cannot be read (empty, truncated, not an image,
                a broken symlink) is logged, listed in ``report.skipped`` and skipped; False
                raises its :class:`gpua_mmseg.apis.io.UnreadableImageError` instead.

        Returns:
            :class:`ManyReport` with ``seconds`` (wall time of the image loop, text encoding
            excluded since it happened already) and ``images_per_s``; also logged.
        """
        files = list_images(paths)
        self.model.get_text_embeddings()  # encoded before the clock starts (usually cached)
        from .io import UnreadableImageError
        report = ManyReport(paths=files)
        t0 = time.perf_counter()
        for p in files:
            try:
                res = self(p)
            except (UnreadableImageError, FileNotFoundError) as e:
                if not skip_unreadable:
                    raise
                logger.warning('skipped: %s', e)
                report.skipped.append((p, str(e)))
                continue
            if on_result is not None:
                on_result(p, res)
            if keep:
                report.results.append(res)
        report.seconds = time.perf_counter() - t0
        logger.info('segmented %d images in %.2f s (%.2f images/s)', len(files), report.seconds,
                    report.images_per_s)
        return report
