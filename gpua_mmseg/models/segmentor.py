"""GPUASegmentor: training-free open-vocabulary segmentation as an MMSeg segmentor.

Per image (method.md §4): RGB 0..255 from the data preprocessor -> 0..1 -> padding of the
batch removed (``img_shape``) -> sliding windows (crops of *all* images of the batch go
through the encoders together, ``crop_batch_size`` at a time) -> per crop: CLIP patch
features -> L2-normalise -> cosine logits with the text embeddings ``[n, Q, h, w]``
(optionally fused with GPUA logits by ``decode_head``) -> stitched logits -> resized to
``ori_shape`` -> (PAMR) -> softmax(logit_scale x .) over queries -> max over synonyms ->
``area_thd`` / ``prob_thd`` -> label map.
"""
import contextlib
from typing import List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmengine.structures import PixelData
from mmseg.models.segmentors import BaseSegmentor
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from torch import Tensor

from ..vocabulary import Vocabulary
from .backbone import query_logits  # noqa: F401  (also registers GPUATwoTowerBackbone)
from .pamr import pamr
from .postprocess import (fits_full_resolution, predict_labels, query_to_class_scores,
                          tiled_scores_and_labels)
from .sliding import _pair, slide_logits
from .streams import SideStream, check_overlap
from .vfm import DEFAULT_VFM_MAX_TOKENS, VFMWindowTokens, check_vfm_window

_AUTOCAST = {None: None, 'fp16': torch.float16, 'bf16': torch.bfloat16}
_DEFAULT_WINDOW = (224, 112)  # slide_crop, slide_stride (pixels) when neither form is given
# 'crop' (the published behaviour): on the toy world 'whole' is within 0.01 mIoU of it, but
# its VFM leaves GPUA-only at chance, which cannot tell the two apart (issue 13 report)
DEFAULT_VFM_WINDOW = 'whole'
_TEST_CFG_KEYS = ('mode', 'crop_size', 'stride')

DEFAULT_PREPROCESSOR = dict(type='SegDataPreProcessor', mean=[0., 0., 0.], std=[1., 1., 1.],
                            bgr_to_rgb=True, pad_val=0, seg_pad_val=255)


def _as_shape(value, name: str):
    if value is None or len(value) < 2:
        raise ValueError(f'img_meta[{name!r}] must be (H, W, ...), got {value!r}')
    return int(value[0]), int(value[1])


def _window(slide_crop, slide_stride, test_cfg):
    """``(slide_crop, slide_stride)`` from either form of the sliding-window settings."""
    if test_cfg is None:
        if slide_crop is None and slide_stride is None:
            return _DEFAULT_WINDOW
        if slide_crop is None:
            return _DEFAULT_WINDOW[0], slide_stride
        return slide_crop, (_DEFAULT_WINDOW[1] if slide_stride is None and slide_crop else
                            slide_stride)
    if not isinstance(test_cfg, dict):
        raise ValueError(f"test_cfg must be dict(mode='slide', crop_size=..., stride=...) or "
                         f"dict(mode='whole'), got {test_cfg!r}")
    unknown = sorted(set(test_cfg) - set(_TEST_CFG_KEYS))
    mode = test_cfg.get('mode', 'whole')
    if unknown or mode not in ('slide', 'whole'):
        raise ValueError(f"test_cfg={dict(test_cfg)!r}: expected dict(mode='slide', "
                         "crop_size=(h, w), stride=(h, w)) or dict(mode='whole')")
    if mode == 'whole':
        crop, stride = 0, None
    else:
        if 'crop_size' not in test_cfg or 'stride' not in test_cfg:
            raise ValueError(f"test_cfg={dict(test_cfg)!r}: mode='slide' needs crop_size and "
                             'stride, e.g. crop_size=(224, 224), stride=(112, 112)')
        crop, stride = test_cfg['crop_size'], test_cfg['stride']
        crop = crop if isinstance(crop, int) else tuple(crop)
        stride = stride if isinstance(stride, int) else tuple(stride)
    given = (slide_crop, slide_stride)
    if given != (None, None):
        same = (not given[0] and not crop) or (
            bool(given[0]) and bool(crop) and _pair('slide_crop', given[0]) == _pair('crop', crop)
            and _pair('slide_stride', given[1]) == _pair('stride', stride))
        if not same:
            raise ValueError(f'slide_crop={given[0]!r}, slide_stride={given[1]!r} disagree with '
                             f'test_cfg={dict(test_cfg)!r}; set the window in one of the two '
                             '(slide_crop=None, slide_stride=None to use test_cfg)')
    return crop, stride


def _check_tta(tta):
    """``None`` or ``dict(scales=[floats > 0], flip=bool)`` -> normalised dict or ``None``."""
    if tta is None:
        return None
    if not isinstance(tta, dict) or set(tta) - {'scales', 'flip'}:
        raise ValueError(f'tta must be None or dict(scales=(0.75, 1.0, 1.25), flip=True), got '
                         f'{tta!r}')
    scales = tta.get('scales', (1.0,))
    scales = (scales,) if isinstance(scales, (int, float)) else tuple(scales)
    if not scales or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
                             for v in scales):
        raise ValueError(f'tta scales must be positive numbers, e.g. (0.75, 1.0, 1.25); got '
                         f'{tta.get("scales")!r}')
    flip = tta.get('flip', False)
    if not isinstance(flip, bool):
        raise ValueError(f'tta flip must be True or False, got {flip!r}')
    return dict(scales=tuple(float(v) for v in scales), flip=flip)


@MODELS.register_module()
class GPUASegmentor(BaseSegmentor):
    """CLIP (+ optional VFM / GPUA head) sliding-window segmentor; see docs/ARCHITECTURE.md.

    Args:
        clip: ``dict(name=, pretrained=, ...)`` for ``build_clip_encoder`` (or, in Python, a
            prebuilt ``CLIPEncoder`` whose ``mode`` equals ``clip_mode``).
        clip_mode, clip_mode_cfg: last-block variant key and its kwargs.
        class_names: the vocabulary: anything ``gpua_mmseg.vocabulary.Vocabulary.parse``
            accepts (package key ``'voc21'``, class-name file, ``"cat, kitty; sofa"`` text, list).
            Change it later with :meth:`set_vocabulary`.
        templates: ``'openai_imagenet'`` or a list of format strings with one ``{}``.
        slide_crop, slide_stride: window / step in pixels (int or (h, w)); ``slide_crop=0``
            encodes each image whole.  Default 224 / 112.
        test_cfg: the same window in MMSeg's form, ``dict(mode='slide', crop_size=(224, 224),
            stride=(112, 112))`` or ``dict(mode='whole')``; give one form, or both agreeing.
        crop_batch_size: crops per encoder forward (1 = reference crop-by-crop behaviour).
        logit_scale: softmax temperature multiplier over queries.
        prob_thd, area_thd, bg_idx: post-processing thresholds (see ``postprocess.py``).
            ``bg_idx``: index of the background class, ``None`` for a vocabulary without one,
            or ``'auto'`` (default): the first class with a background-like name
            (``Vocabulary.background_index``), else none.  ``prob_thd > 0`` (pixels below it
            become background) needs a background class.
        pamr_steps, pamr_dilations: PAMR refinement (0 steps disables).
        autocast_dtype: None | 'fp16' | 'bf16'; otherwise dtype follows the parameters.
        tta: test-time augmentation that keeps the method, ``dict(scales=(0.75, 1.0, 1.25),
            flip=True)``: every view (image rescaled by each factor, and mirrored if ``flip``)
            is segmented, its class scores (softmax, synonym max) are brought back to the
            original size and averaged, and only then ``prob_thd`` / ``area_thd`` / background
            handling apply.  ``None`` or ``dict(scales=(1.0,), flip=False)``: the plain run,
            bit for bit.  (MMSeg's ``SegTTAModel`` would re-softmax our scores and skip the
            thresholds; ``tools/test.py --tta`` sets this instead.)
        vfm, decode_head: GPUA: both (or later: :meth:`attach_gpua`).  ``clip_mode='proxyclip'``
            needs ``vfm`` (its attention comes from the VFM tokens), with or without a head;
            GPUA on ProxyCLIP runs the VFM once per crop batch for both.
            ``decode_head.fuse(clip_logits [n,Q,h,w], vfm_tokens [n,hv,wv,dv] | None,
            text_emb [Q,dc]) -> [n,Q,h,w]``; a head whose ``needs_vfm`` is False (GPUAHead at
            ``fusion_weight=1``) gets ``None`` and the VFM is not run.
        vfm_window: where the GPUA head's VFM looks (CLIP keeps its sliding window):
            ``'crop'`` (the VFM encodes each CLIP crop, as published), ``'whole'`` (one
            VFM forward over the whole image, its patch grid bilinearly resampled, in image
            coordinates, onto each CLIP crop's patch grid: fewer VFM tokens and context beyond
            the crop) or ``dict(crop_size=448, stride=336)`` (VFM windows of their own, pixels;
            overlaps averaged).  The fit's feature extraction uses the same setting
            (:class:`~gpua_mmseg.models.vfm.VFMWindowTokens` is the one code path).
            ``None`` (default): ``DEFAULT_VFM_WINDOW`` (``'whole'``: on the toy world at
            9 CLIP crops per image GPUA-fused mIoU moved 44.50 -> 44.48 against ``'crop'``,
            GPUA alone 46.9 -> 43.6; on CPU at 336 x 448 GPUA + SCLIP costs 1.55x SCLIP
            instead of 2.01x, docs/bench_speed_cpu.md), and ``'crop'`` for
            ProxyCLIP, whose attention reads the VFM tokens of its own crop
            (``clip_mode='proxyclip'`` accepts only ``'crop'``; GPUA on it shares that one VFM
            forward per crop).
        vfm_max_tokens: memory cap of ``'whole'``: an image whose VFM patch grid has more
            tokens (default 4096 = 64 x 64 patches, 1024 x 1024 pixels at patch 16) is encoded
            in windows of at most that many tokens with 1/4 overlap instead.
        overlap_encoders: on a CUDA device, run the VFM's forward on a second CUDA stream
            beside CLIP's (they are independent except in ProxyCLIP, which keeps them in
            turn); the same operations, so the same scores.  No effect off CUDA.  Default
            False until ``tools/benchmark.py --side-by-side --gpu-variants`` shows it wins on
            a GPU (docs/bench_segmentor_h100.md).
    """

    def __init__(self, clip: dict, clip_mode: str = 'sclip', clip_mode_cfg: Optional[dict] = None,
                 class_names: str = 'voc21', templates: Union[str, Sequence[str]] = 'openai_imagenet',
                 slide_crop=None, slide_stride=None,
                 crop_batch_size: int = 32, logit_scale: float = 40.0, prob_thd: float = 0.0,
                 area_thd: Optional[float] = None, bg_idx: Union[int, str, None] = 'auto',
                 pamr_steps: int = 0, pamr_dilations: Sequence[int] = (8, 16),
                 autocast_dtype: Optional[str] = None, vfm: Optional[dict] = None,
                 decode_head: Optional[dict] = None, test_cfg: Optional[dict] = None,
                 tta: Optional[dict] = None, vfm_window=None,
                 vfm_max_tokens: int = DEFAULT_VFM_MAX_TOKENS, overlap_encoders: bool = False,
                 data_preprocessor=None, init_cfg=None):
        if data_preprocessor is None:
            data_preprocessor = dict(DEFAULT_PREPROCESSOR)
        if isinstance(data_preprocessor, dict):
            # mmseg's registry: mmengine's root one cannot see SegDataPreProcessor without a scope.
            data_preprocessor = MODELS.build(data_preprocessor)
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        slide_crop, slide_stride = _window(slide_crop, slide_stride, test_cfg)
        self._check_args(slide_crop, slide_stride, crop_batch_size, logit_scale, prob_thd,
                         area_thd, pamr_steps, autocast_dtype, vfm, decode_head)
        if isinstance(clip, torch.nn.Module):
            # A prebuilt CLIPEncoder (programmatic use: benchmarks, tests sharing weights).
            if getattr(clip, 'mode', clip_mode) != clip_mode:
                raise ValueError(f'prebuilt clip encoder has mode {clip.mode!r} but clip_mode='
                                 f'{clip_mode!r}; build the encoder with the same mode')
            self.clip_encoder = clip
        else:
            from .clip import build_clip_encoder
            self.clip_encoder = build_clip_encoder(clip, mode=clip_mode, mode_cfg=clip_mode_cfg)
        self.clip_encoder.eval().requires_grad_(False)

        self.clip_mode = clip_mode
        self.templates = templates
        # Cached on first use (text encoding is expensive), then follows .to(device/dtype).
        self.register_buffer('text_embeddings', None, persistent=False)
        self.register_buffer('query_to_class', None, persistent=False)
        self.register_load_state_dict_post_hook(self._reset_text_cache)
        self.align_corners = False
        self.slide_crop = slide_crop or 0
        self.slide_stride = slide_stride
        self.test_cfg = (dict(mode='slide', crop_size=_pair('slide_crop', slide_crop),
                              stride=_pair('slide_stride', slide_stride))
                         if slide_crop else dict(mode='whole'))
        self.crop_batch_size = crop_batch_size
        self.logit_scale = float(logit_scale)
        self._prob_thd_cfg = float(prob_thd)
        self.area_thd = area_thd
        self.pamr_steps = pamr_steps
        self.pamr_dilations = tuple(pamr_dilations)
        self.autocast_dtype = _AUTOCAST[autocast_dtype]
        self.tta = _check_tta(tta)
        if vfm_window is None:  # ProxyCLIP's attention needs the crop's own VFM tokens
            vfm_window = 'crop' if self.clip_encoder.needs_vfm else DEFAULT_VFM_WINDOW
        self.vfm_window = check_vfm_window(vfm_window)
        if (isinstance(vfm_max_tokens, bool) or not isinstance(vfm_max_tokens, int)
                or vfm_max_tokens < 1):
            raise ValueError(f'vfm_max_tokens must be an int >= 1 (VFM patches per forward, '
                             f'e.g. 4096), got {vfm_max_tokens!r}')
        self.vfm_max_tokens = vfm_max_tokens
        self.overlap_encoders = check_overlap(overlap_encoders)
        self._side_streams = {}
        if self.clip_encoder.needs_vfm:
            self._check_vfm_window()
        self.set_vocabulary(class_names, bg_idx)
        if self.bg_idx is None and self._prob_thd_cfg > 0:
            raise ValueError(
                f'prob_thd={prob_thd} turns low-score pixels into the background class, but '
                f'class_names {class_names!r} has none (bg_idx={bg_idx!r}); set bg_idx to the '
                'index of its background class, or prob_thd=0')

        self.vfm_encoder = None
        self.decode_head = None
        if vfm is not None and decode_head is not None:
            self.attach_gpua(vfm, decode_head)
        elif vfm is not None:
            if not self.clip_encoder.needs_vfm:
                raise ValueError(f'vfm=dict(...) without decode_head: clip_mode={clip_mode!r} does '
                                 "not use a VFM; add decode_head=dict(type='GPUAHead', ...) for "
                                 'GPUA, or remove vfm')
            self._set_vfm(vfm)
        elif self.clip_encoder.needs_vfm:
            raise ValueError(f'clip_mode={clip_mode!r} computes its attention from VFM patch '
                             "tokens: add vfm=dict(name='vit_base_patch16_dinov3.lvd1689m', "
                             'pretrained=True) (see configs/_base_/models/proxyclip.py)')

    # ------------------------------------------------------------------ public API
    def set_vocabulary(self, vocab, bg_idx: Union[int, str, None] = 'auto') -> 'GPUASegmentor':
        """Switch to another vocabulary: text classifier, background index and thresholds.

        Args:
            vocab: anything ``Vocabulary.parse`` accepts (``'voc21'``, a file, ``"cat, kitty;
                sofa; background"``, ``['cat', ['sofa', 'couch']]``).  Text embeddings are
                computed on first use and cached per (weights, queries, templates).
            bg_idx: background class index, ``None``, or ``'auto'`` (a class with a
                background-like name, else none).  ``prob_thd`` is the configured one when
                there is a background class and 0 otherwise.

        Returns:
            ``self``.  An attached GPUA head is not re-checked here: call
            :meth:`check_alignment` (its map was fitted for one vocabulary).
        """
        from .text_classifier import TextClassifier
        vocabulary = Vocabulary.parse(vocab)
        classifier = TextClassifier(self.clip_encoder, vocabulary.classes, self.templates)
        n = int(classifier.num_classes)
        if bg_idx == 'auto':
            bg_idx = vocabulary.background_index
        elif bg_idx is not None and (isinstance(bg_idx, bool) or not isinstance(bg_idx, int)
                                     or not 0 <= bg_idx < n):
            raise ValueError(f'bg_idx={bg_idx!r} is not a class of {vocabulary.source} ({n} '
                             "classes); use None for no background class or 'auto'")
        self.vocabulary = vocabulary
        self.text_classifier = classifier
        self.text_embeddings = None
        self.query_to_class = torch.as_tensor(classifier.query_to_class).long().to(
            self.clip_encoder.mean.device)
        self.num_classes = self.out_channels = n
        self.bg_idx = bg_idx
        self.prob_thd = self._prob_thd_cfg if bg_idx is not None else 0.0
        return self

    def attach_gpua(self, vfm_encoder, head, check: bool = True) -> 'GPUASegmentor':
        """Attach (or, with ``None, None``, detach) a VFM encoder and a GPUA head.

        Args:
            vfm_encoder: a :class:`VFMEncoder` or its ``dict(name=, pretrained=, ...)``.
            head: a :class:`GPUAHead` (or another module with ``fuse``) or its config dict.
            check: run :meth:`check_alignment` (the map must fit these encoders and the
                current vocabulary).

        Returns:
            ``self``; both modules are frozen, in eval mode, on the CLIP encoder's device.
        """
        if (vfm_encoder is None) != (head is None):
            raise ValueError('GPUA needs both vfm=dict(...) and decode_head=dict(type='
                             "'GPUAHead', ...); set both, or neither for a CLIP-only baseline")
        if vfm_encoder is None:
            # ProxyCLIP keeps its VFM (its attention needs it); everything else drops it
            self.decode_head = None
            if not self.clip_encoder.needs_vfm:
                self.vfm_encoder = None
            return self
        device = self.clip_encoder.mean.device
        self._set_vfm(vfm_encoder)
        if isinstance(head, dict):
            head = MODELS.build(head)
        self.decode_head = head.eval().to(device)
        if check:
            self.check_alignment()
        return self

    def _check_vfm_window(self) -> None:
        if self.clip_encoder.needs_vfm and self.vfm_window != 'crop':
            raise ValueError(f'vfm_window={self.vfm_window!r} with clip_mode={self.clip_mode!r}: '
                             "ProxyCLIP's attention reads the VFM tokens of each crop; use "
                             "vfm_window='crop' (GPUA on ProxyCLIP shares that VFM forward)")

    def vfm_needed(self) -> bool:
        """Whether segmenting runs the VFM: ProxyCLIP's attention, or a head that reads VFM
        tokens (not a GPUA head at ``fusion_weight=1``)."""
        head = self.decode_head
        return bool(self.clip_encoder.needs_vfm
                    or (head is not None and getattr(head, 'needs_vfm', True)))

    def vfm_window_tokens(self, images01: List[Tensor], vfm_encoder=None,
                          side: Optional[SideStream] = None) -> VFMWindowTokens:
        """The VFM tokens of these images' crops under :attr:`vfm_window` (with ``'whole'`` or
        a dict window, the VFM runs here, once per image / window); see
        :class:`~gpua_mmseg.models.vfm.VFMWindowTokens`.  ``vfm_encoder`` defaults to the
        attached one (the fit passes its own); ``side``: see
        :class:`~gpua_mmseg.models.vfm.VFMWindowTokens`."""
        self._check_vfm_window()
        vfm = self.vfm_encoder if vfm_encoder is None else vfm_encoder
        if vfm is None:
            raise ValueError('no VFM encoder: attach one (attach_gpua) or pass vfm_encoder')
        return VFMWindowTokens(vfm, images01, self.vfm_window, self.clip_encoder.patch_size,
                               self.vfm_max_tokens, self.crop_batch_size, side=side)

    def side_stream(self, device) -> SideStream:
        """The stream the VFM runs on beside CLIP (:attr:`overlap_encoders`); inert off CUDA,
        when overlap is off, or when CLIP reads the VFM tokens (ProxyCLIP)."""
        device = torch.device(device)
        enabled = self.overlap_encoders and not self.clip_encoder.needs_vfm
        key = (str(device), enabled)
        if key not in self._side_streams:
            self._side_streams[key] = SideStream(device, enabled)
        return self._side_streams[key]

    def _set_vfm(self, vfm_encoder) -> None:
        from .vfm import build_vfm_encoder
        device = self.clip_encoder.mean.device
        self.vfm_encoder = build_vfm_encoder(vfm_encoder).eval().requires_grad_(False).to(device)

    def check_alignment(self) -> None:
        """Check the attached GPUA head's map against this model (no-op without a head).

        The expected identity (:func:`gpua_mmseg.models.identity.artifact_identity`: encoder
        names and weight digests, CLIP activation, ``clip_mode``, vocabulary hash) and the
        feature widths are compared with the artifact, so a map fitted for another VFM, CLIP,
        mode or vocabulary fails with the refit command instead of segmenting silently.

        Raises:
            ValueError: from ``GPUAHead.validate``, naming each mismatch.
        """
        validate = getattr(self.decode_head, 'validate', None)
        if not callable(validate):
            return
        from .identity import artifact_identity
        identity = artifact_identity(self.clip_encoder, self.vfm_encoder, self.clip_mode,
                                     None, self.vocabulary)
        validate(dv=self.vfm_encoder.embed_dim, dc=self.clip_encoder.embed_dim,
                 identity=identity)

    # ------------------------------------------------------------------ construction
    @staticmethod
    def _check_args(slide_crop, slide_stride, crop_batch_size, logit_scale, prob_thd, area_thd,
                    pamr_steps, autocast_dtype, vfm, decode_head):
        if slide_crop:
            crop = _pair('slide_crop', slide_crop)
            try:
                stride = _pair('slide_stride', slide_stride)
            except ValueError:
                stride = None
            if stride is None or stride[0] > crop[0] or stride[1] > crop[1]:
                raise ValueError(f'slide_stride must be an int (or pair) in (0, slide_crop='
                                 f'{slide_crop}], got {slide_stride!r}; e.g. slide_crop=224, '
                                 'slide_stride=112')
        elif slide_crop is not None and (not isinstance(slide_crop, int) or slide_crop < 0):
            raise ValueError(f'slide_crop must be an int >= 0 (0 = whole image), got {slide_crop!r}')
        if not isinstance(crop_batch_size, int) or crop_batch_size < 1:
            raise ValueError(f'crop_batch_size must be an int >= 1, got {crop_batch_size!r}')
        if not logit_scale > 0:
            raise ValueError(f'logit_scale must be > 0, got {logit_scale!r}')
        if not 0.0 <= float(prob_thd) <= 1.0:
            raise ValueError(f'prob_thd must be in [0, 1], got {prob_thd!r}')
        if area_thd is not None and not 0.0 <= float(area_thd) <= 1.0:
            raise ValueError(f'area_thd must be None or in [0, 1], got {area_thd!r}')
        if not isinstance(pamr_steps, int) or pamr_steps < 0:
            raise ValueError(f'pamr_steps must be an int >= 0 (0 disables), got {pamr_steps!r}')
        if autocast_dtype not in _AUTOCAST:
            raise ValueError(f"autocast_dtype must be None, 'fp16' or 'bf16', got "
                             f'{autocast_dtype!r}')
        if vfm is None and decode_head is not None:
            raise ValueError('GPUA needs both vfm=dict(...) and decode_head=dict(type='
                             "'GPUAHead', ...); set both, or neither for a CLIP-only baseline")

    def get_text_embeddings(self) -> Tensor:
        """``[Q, dc]`` L2-normalised text embeddings, computed once, on the module's device.

        Cached in the non-persistent buffer ``text_embeddings`` (so it follows ``.to()``);
        loading a state dict clears it, since the text tower may have changed.
        """
        if self.text_embeddings is None:
            emb = torch.as_tensor(self.text_classifier.embeddings)
            self.text_embeddings = F.normalize(emb, dim=-1).to(self.clip_encoder.mean.device)
        return self.text_embeddings

    @staticmethod
    def _reset_text_cache(module, incompatible_keys):
        module.text_embeddings = None

    # ------------------------------------------------------------------ per-crop logits
    def crop_logits(self, crops01: Tensor, vfm_tokens: Optional[Tensor] = None) -> Tensor:
        """Query logits ``[n, Q, h, w]`` (cosine, unitless) of crops ``[n, 3, H, W]`` in 0..1.

        ``h, w`` is the CLIP patch grid ``H/p, W/p`` (the VFM grid for ProxyCLIP).
        ``vfm_tokens``: see :meth:`crop_logit_parts`.
        """
        clip_logits, gpua = self.crop_logit_parts(crops01, vfm_tokens)
        if gpua is None:
            return clip_logits
        return self.decode_head.mix(clip_logits, gpua)

    def crop_logit_parts(self, crops01: Tensor, vfm_tokens: Optional[Tensor] = None):
        """``(clip_logits, gpua_logits)`` of crops ``[n, 3, H, W]`` in 0..1, each ``[n, Q, h, w]``
        on the CLIP logits' grid; ``gpua_logits`` is ``None`` without a head that needs the VFM
        (CLIP-only, or λ = 1).  :meth:`crop_logits` mixes them; ``tools/sweep.py`` keeps both.

        ``vfm_tokens``: ``[n, hv, wv, dv]`` VFM tokens of these crops
        (:meth:`VFMWindowTokens.tokens`), or a zero-argument callable returning them (called
        after CLIP's forward is enqueued, so a VFM running on :meth:`side_stream` overlaps it);
        ``None``: the VFM encodes the crops here, which is only right for
        ``vfm_window='crop'`` (use :meth:`slide_crops` for the others).
        """
        clip = self.clip_encoder
        # λ = 1: the GPUA term has weight 0 and the head needs no VFM tokens
        head_needs_vfm = (self.decode_head is not None
                          and getattr(self.decode_head, 'needs_vfm', True))
        if not (clip.needs_vfm or head_needs_vfm):
            vfm_tokens = None
        elif vfm_tokens is None:
            if self.vfm_window != 'crop':
                raise ValueError(f'vfm_window={self.vfm_window!r}: the VFM tokens depend on '
                                 "the crops' positions in the image; go through "
                                 'GPUASegmentor.slide_crops(images, fn) (fn gets the tokens)')
            # one VFM forward serves both ProxyCLIP's attention and the GPUA logits
            side = self.side_stream(crops01.device)
            with side.launch():
                tokens = self.vfm_encoder.patch_features(self.vfm_encoder.normalize(crops01))

            def vfm_tokens():
                side.join(tokens)
                return tokens
        x = clip.normalize(crops01)
        if clip.needs_vfm:
            vfm_tokens = vfm_tokens() if callable(vfm_tokens) else vfm_tokens
            feats = clip.patch_features(x, vfm_tokens=vfm_tokens)
        else:
            feats = clip.patch_features(x)
            # only now: CLIP is enqueued, and a side-stream VFM runs beside it
            vfm_tokens = vfm_tokens() if callable(vfm_tokens) else vfm_tokens
        return self.logit_parts_from_features(feats, vfm_tokens)

    def logit_parts_from_features(self, feats: Tensor, vfm_tokens: Optional[Tensor]):
        """:meth:`crop_logit_parts` from the encoders' outputs of the crops: CLIP patch
        features ``[n, h, w, dc]`` and VFM tokens ``[n, hv, wv, dv]`` (``None`` when no head
        reads them)."""
        text = self.get_text_embeddings()
        head_needs_vfm = (self.decode_head is not None
                          and getattr(self.decode_head, 'needs_vfm', True))
        logits = query_logits(feats, text)
        if not head_needs_vfm:
            return logits, None
        if not hasattr(self.decode_head, 'gpua_on_grid'):  # another head with only fuse()
            # fuse at the head's own weight; the sweep needs a GPUAHead
            return self.decode_head.fuse(logits, vfm_tokens, text), None
        return logits, self.decode_head.gpua_on_grid(vfm_tokens, text, logits)

    def logits_from_crop_features(self, images: List[Tensor], crop_feats) -> List[Tensor]:
        """Stitched logits ``[Q, H_i, W_i]`` of ``images`` (``[3, H_i, W_i]`` in 0..1) from their
        crops' stored encoder outputs, without running an encoder: ``crop_feats`` lists, per
        crop batch in sliding-window order, ``(clip_feats, vfm_tokens)`` as
        :func:`gpua_mmseg.fitting.extract.extract_image_features` (``keep_crops=True``) returns
        them for the same images, window and crop batch size.  Equals :meth:`_slide` (the
        same logits, mix and stitching)."""
        batches = iter(crop_feats)

        def fn(crops01):
            try:
                feats, tokens = next(batches)
            except StopIteration:
                raise ValueError('crop_feats has fewer crop batches than the sliding window of '
                                 'these images') from None
            if feats.shape[0] != crops01.shape[0]:
                raise ValueError(f'crop_feats batch of {feats.shape[0]} crops for a window '
                                 f'batch of {crops01.shape[0]}: extracted with another window '
                                 'or crop batch size')
            clip_logits, gpua = self.logit_parts_from_features(feats, tokens)
            return clip_logits if gpua is None else self.decode_head.mix(clip_logits, gpua)
        with self._autocast(images[0].device):
            out = slide_logits(images, fn, crop=self.slide_crop, stride=self.slide_stride,
                               crop_batch_size=self.crop_batch_size,
                               size_divisor=self.clip_encoder.patch_size)
        if next(batches, None) is not None:
            raise ValueError('crop_feats has more crop batches than the sliding window of these '
                             'images (features of other images?)')
        return out

    def _autocast(self, device: torch.device):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.autocast_dtype)

    def _valid_images(self, inputs: Tensor, batch_img_metas: Optional[List[dict]]) -> List[Tensor]:
        """Per image ``[3, h_i, w_i]`` in 0..1 with the batch padding cut away."""
        if inputs.dim() != 4 or inputs.shape[1] != 3:
            raise ValueError(f'inputs must be [B, 3, H, W] RGB 0..255, got {tuple(inputs.shape)}')
        # The encoders' parameters decide device and dtype (e.g. after .half()).
        ref = self.clip_encoder.model.visual.conv1.weight
        images = inputs.to(device=ref.device, dtype=ref.dtype if ref.is_floating_point()
                           else inputs.dtype) / 255.0
        if batch_img_metas is None:
            return list(images.unbind(0))
        if len(batch_img_metas) != images.shape[0]:
            raise ValueError(f'{len(batch_img_metas)} img_metas for {images.shape[0]} images')
        out = []
        for img, meta in zip(images, batch_img_metas):
            h, w = _as_shape(meta.get('img_shape', img.shape[-2:]), 'img_shape')
            out.append(img[:, :min(h, img.shape[-2]), :min(w, img.shape[-1])])
        return out

    def _slide(self, images: List[Tensor]) -> List[Tensor]:
        return self.slide_crops(images, self.crop_logits, lazy_tokens=True)

    def slide_crops(self, images: List[Tensor], fn, lazy_tokens: bool = False) -> List[Tensor]:
        """Stitch ``fn(crops01 [n, 3, h, w], vfm_tokens | None) -> [n, C, h', w']`` over the
        sliding window of each image ``[3, H_i, W_i]`` (0..1) -> ``[C, H_i, W_i]`` each.

        ``vfm_tokens`` are the crops' VFM tokens under :attr:`vfm_window` when the model runs
        the VFM and the window is not ``'crop'`` (encoded once per image here), else ``None``
        (``fn`` may then call :meth:`crop_logit_parts` without them).  ``lazy_tokens``: ``fn``
        gets a zero-argument callable returning those tokens instead, to call once its CLIP
        forward is enqueued (:meth:`crop_logit_parts` accepts either); with
        :attr:`overlap_encoders` on CUDA the images' VFM forward then runs beside CLIP.
        """
        kw = dict(crop=self.slide_crop, stride=self.slide_stride,
                  crop_batch_size=self.crop_batch_size,
                  size_divisor=self.clip_encoder.patch_size)
        with self._autocast(images[0].device):
            if self.vfm_window == 'crop' or not self.vfm_needed():
                return slide_logits(images, lambda crops: fn(crops, None), **kw)
            side = self.side_stream(images[0].device) if lazy_tokens else None
            source = self.vfm_window_tokens(images, side=side)
            if lazy_tokens:
                return slide_logits(
                    images, lambda crops, chunk: fn(crops, lambda: source.tokens(crops, chunk)),
                    with_crops=True, **kw)
            return slide_logits(images, lambda crops, chunk: fn(crops, source.tokens(crops, chunk)),
                                with_crops=True, **kw)

    # ------------------------------------------------------------------ MMSeg API
    def extract_feat(self, inputs: Tensor) -> Tensor:
        """CLIP patch features ``[B, H/p, W/p, dc]`` of whole images (RGB 0..255, H, W
        multiples of the patch size)."""
        images = torch.stack(self._valid_images(inputs, None))
        with self._autocast(images.device):
            return self.clip_encoder.patch_features(self.clip_encoder.normalize(images))

    def encode_decode(self, inputs: Tensor, batch_img_metas: Optional[List[dict]] = None
                      ) -> Tensor:
        """Stitched query logits ``[B, Q, H, W]`` at the (padded) input size; zero where padded."""
        logits = self._slide(self._valid_images(inputs, batch_img_metas))
        out = logits[0].new_zeros((len(logits), logits[0].shape[0]) + tuple(inputs.shape[-2:]))
        for i, lg in enumerate(logits):
            out[i, :, :lg.shape[-2], :lg.shape[-1]] = lg
        return out

    def _forward(self, inputs: Tensor, data_samples=None) -> Tensor:
        """Raw query logits ``[B, Q, H, W]`` (see :meth:`encode_decode`)."""
        metas = None if data_samples is None else [s.metainfo for s in data_samples]
        return self.encode_decode(inputs, metas)

    def loss(self, inputs, data_samples):
        raise RuntimeError('GPUASegmentor is training-free: it has no loss. Use mode="predict" '
                           '(tools/test.py); GPUA alignment is fitted with tools/fit_alignment.py')

    @torch.no_grad()
    def predict(self, inputs: Tensor, data_samples: Optional[List[SegDataSample]] = None
                ) -> List[SegDataSample]:
        """Segment a batch.

        Returns one SegDataSample per image with ``seg_logits`` ``[C, H0, W0]`` (class scores in
        [0, 1] after softmax and synonym max, before thresholds) and ``pred_sem_seg``
        ``[1, H0, W0]`` int64, where ``(H0, W0) = img_meta['ori_shape']`` (input size if no
        meta).
        """
        if data_samples is None:
            metas = [dict(img_shape=inputs.shape[-2:], ori_shape=inputs.shape[-2:])
                     for _ in range(inputs.shape[0])]
            data_samples = [SegDataSample() for _ in range(inputs.shape[0])]
        else:
            metas = [s.metainfo for s in data_samples]
        images = self._valid_images(inputs, metas)
        views = self.tta_views()
        if views == [(1.0, False)]:
            results = [self.postprocess_one(img, lg, meta)
                       for img, lg, meta in zip(images, self._slide(images), metas)]
        else:
            results = self._predict_tta(images, metas, views)
        for (scores, labels), sample in zip(results, data_samples):
            sample.set_data(dict(seg_logits=PixelData(data=scores),
                                 pred_sem_seg=PixelData(data=labels[None])))
        return data_samples

    def tta_views(self) -> List[tuple]:
        """``[(scale, flipped), ...]`` of the configured TTA (``[(1.0, False)]`` without)."""
        if self.tta is None:
            return [(1.0, False)]
        flips = (False, True) if self.tta['flip'] else (False,)
        return [(s, f) for s in self.tta['scales'] for f in flips]

    def _predict_tta(self, images: List[Tensor], metas: List[dict], views) -> List[tuple]:
        """Average the class scores ``[C, H0, W0]`` of every view, then threshold once."""
        sums: List[Optional[Tensor]] = [None] * len(images)
        for scale, flipped in views:
            batch = []
            for img in images:
                h, w = img.shape[-2:]
                size = (max(1, int(round(h * scale))), max(1, int(round(w * scale))))
                v = img if size == (h, w) else F.interpolate(
                    img[None], size=size, mode='bilinear', align_corners=False)[0]
                batch.append(v.flip(-1) if flipped else v)
            for i, (v, lg) in enumerate(zip(batch, self._slide(batch))):
                if flipped:  # back to the original orientation before anything else
                    v, lg = v.flip(-1), lg.flip(-1)
                sc = self.class_scores(v, lg, metas[i])
                sums[i] = sc if sums[i] is None else sums[i] + sc
        out = []
        for sc in sums:
            scores = sc / len(views)
            labels = predict_labels(scores[None], self.prob_thd, self.area_thd, self.bg_idx)[0]
            out.append((scores, labels))
        return out

    def class_scores(self, image01: Tensor, logits: Tensor, meta: dict) -> Tensor:
        """Class scores ``[C, H0, W0]`` (softmax over queries, synonym max; no thresholds) of
        one image's logits ``[Q, h, w]`` at ``meta['ori_shape']`` (PAMR applied if enabled)."""
        ori = _as_shape(meta.get('ori_shape', logits.shape[-2:]), 'ori_shape')
        lg = logits[None]
        if tuple(lg.shape[-2:]) != ori:
            lg = F.interpolate(lg, size=ori, mode='bilinear', align_corners=False)
        if self.pamr_steps:
            img = image01[None].to(lg.dtype)
            if tuple(img.shape[-2:]) != ori:
                img = F.interpolate(img, size=ori, mode='bilinear', align_corners=False)
            lg = pamr(img, lg, self.pamr_steps, self.pamr_dilations)
        return query_to_class_scores(lg, self.query_to_class, self.num_classes,
                                     self.logit_scale)[0]

    def postprocess_one(self, image01: Tensor, logits: Tensor, meta: dict):
        """One image: logits ``[Q, h, w]`` at input size -> (scores ``[C, H0, W0]``, labels
        ``[H0, W0]``) at ``meta['ori_shape']``."""
        ori = _as_shape(meta.get('ori_shape', logits.shape[-2:]), 'ori_shape')
        lg = logits[None]
        flip = meta.get('flip', False)
        if flip:
            dims = (3,) if meta.get('flip_direction', 'horizontal') == 'horizontal' else (2,)
            lg, image01 = lg.flip(dims), image01.flip(tuple(d - 1 for d in dims))
        if not fits_full_resolution(lg.shape[1], ori):
            # Huge output: bounded memory (postprocess.py); PAMR and the returned scores stay
            # at the working resolution.
            if self.pamr_steps:
                lg = pamr(image01[None].to(lg.dtype), lg, self.pamr_steps, self.pamr_dilations)
            scores, labels = tiled_scores_and_labels(
                lg, ori, self.query_to_class, self.num_classes, self.logit_scale,
                self.prob_thd, self.area_thd, self.bg_idx)
            return scores[0], labels[0]
        scores = self.class_scores(image01, lg[0], meta)[None]
        labels = predict_labels(scores, self.prob_thd, self.area_thd, self.bg_idx)
        return scores[0], labels[0]
