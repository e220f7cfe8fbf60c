"""GPUATwoTowerBackbone: CLIP + VFM patch features for MMSeg's own ``EncoderDecoder``.

With it, :class:`~gpua_mmseg.models.GPUAHead` is an ordinary MMSeg ``decode_head``::

    model = dict(
        type='EncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor', mean=[0., 0., 0.], std=[1., 1., 1.],
                               bgr_to_rgb=True, pad_val=0, seg_pad_val=255),
        backbone=dict(type='GPUATwoTowerBackbone', clip=dict(name='ViT-B-16', pretrained='openai'),
                      clip_mode='sclip', vfm=dict(name='vit_base_patch16_dinov3.lvd1689m'),
                      class_names='voc21'),
        decode_head=dict(type='GPUAHead', alignment_path='...', num_classes=21,
                         logit_scale=65.0),
        test_cfg=dict(mode='slide', crop_size=(224, 224), stride=(112, 112)))

MMSeg then does the sliding window, stitching, resizing and argmax; the label maps equal
:class:`~gpua_mmseg.models.GPUASegmentor`'s on the same weights when every class has one text
query and no thresholds / PAMR are configured (those are GPUASegmentor features: MMSeg's
``EncoderDecoder`` post-processing is a plain argmax).  GPUASegmentor stays the fast path: it
batches the crops of all images through the encoders, and only it has ``vfm_window='whole'``
(here MMSeg hands the backbone one crop at a time, so the VFM always sees the crop: ``'crop'``).
"""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch import Tensor

from ..vocabulary import Vocabulary
from .sliding import resize_to_patch_multiple

__all__ = ['GPUATwoTowerBackbone', 'query_logits']


def query_logits(clip_feats: Tensor, text_emb: Tensor) -> Tensor:
    """Cosine logits of CLIP patch features against text embeddings.

    Args:
        clip_feats: ``[n, h, w, dc]`` patch features (any scale; normalised here).
        text_emb: ``[Q, dc]`` L2-normalised text embeddings.

    Returns:
        ``[n, Q, h, w]`` cosines in ``[-1, 1]``, in the dtype of ``clip_feats``.
    """
    feats = F.normalize(clip_feats, dim=-1)
    return torch.einsum('nhwd,qd->nqhw', feats, text_emb.to(feats.dtype))


@MODELS.register_module()
class GPUATwoTowerBackbone(BaseModule):
    """Frozen CLIP and VFM towers plus the CLIP text classifier, as an MMSeg backbone.

    Args:
        clip, clip_mode, clip_mode_cfg: as in :class:`~gpua_mmseg.models.GPUASegmentor`.
        vfm: ``dict(name=, pretrained=, model_kwargs=)`` for ``build_vfm_encoder`` (or a built
            encoder); ``None`` for a CLIP-only model (a head at ``fusion_weight=1``).
        class_names, templates: the vocabulary (anything ``Vocabulary.parse`` accepts) and the
            prompt templates of the text classifier.

    MMSeg's ``slide_inference`` calls the backbone once per crop, so in this form the VFM
    always sees the CLIP crop: it is ``GPUASegmentor(vfm_window='crop')`` (the segmentor's
    default, ``'whole'``, needs the whole image and is not available here).

    ``forward(inputs)`` takes ``[B, 3, H, W]`` RGB in 0..255 (MMSeg's ``SegDataPreProcessor``
    with mean 0 / std 1) and returns ``(clip [B, dc, H/p, W/p], vfm [B, dv, hv, wv] or None,
    text [Q, dc] L2-normalised, query_to_class [Q] int64)``.  A side that is not a multiple of a
    tower's patch size is resized to the nearest multiple for that tower (any ``H, W >= 1``).
    """

    def __init__(self, clip: Union[dict, torch.nn.Module], clip_mode: str = 'sclip',
                 clip_mode_cfg: Optional[dict] = None, vfm: Optional[dict] = None,
                 class_names='voc21', templates: Union[str, Sequence[str]] = 'openai_imagenet',
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg)
        from .clip import build_clip_encoder
        from .text_classifier import TextClassifier
        if isinstance(clip, torch.nn.Module):
            self.clip_encoder = clip
        else:
            self.clip_encoder = build_clip_encoder(clip, mode=clip_mode, mode_cfg=clip_mode_cfg)
        self.clip_encoder.eval().requires_grad_(False)
        self.vfm_encoder = None
        if vfm is not None:
            from .vfm import build_vfm_encoder
            self.vfm_encoder = build_vfm_encoder(vfm).eval().requires_grad_(False)
        self.vocabulary = Vocabulary.parse(class_names)
        self.text_classifier = TextClassifier(self.clip_encoder, self.vocabulary.classes, templates)

    def train(self, mode: bool = True) -> 'GPUATwoTowerBackbone':
        """Both towers stay in eval mode (frozen, training-free)."""
        super().train(mode)
        self.clip_encoder.eval()
        if self.vfm_encoder is not None:
            self.vfm_encoder.eval()
        return self

    def forward(self, inputs: Tensor) -> Tuple[Tensor, Optional[Tensor], Tensor, Tensor]:
        """See the class docstring."""
        if inputs.dim() != 4 or inputs.shape[1] != 3:
            raise ValueError(f'inputs must be [B, 3, H, W] RGB 0..255, got {tuple(inputs.shape)}')
        clip = self.clip_encoder
        ref = clip.model.visual.conv1.weight
        images01 = inputs.to(device=ref.device, dtype=ref.dtype) / 255.0
        with torch.no_grad():
            clip_in = resize_to_patch_multiple(images01, clip.patch_size)
            vfm_feats = None
            if self.vfm_encoder is not None:
                vfm_feats = self.vfm_encoder.patch_features(self.vfm_encoder.normalize(images01))
            elif clip.needs_vfm:
                raise ValueError(f'clip_mode={clip.mode!r} needs the VFM tokens: give the '
                                 'backbone vfm=dict(...)')
            # ProxyCLIP's attention and the GPUA head share the one VFM forward
            x = clip.normalize(clip_in)
            clip_feats = (clip.patch_features(x, vfm_tokens=vfm_feats) if clip.needs_vfm
                          else clip.patch_features(x))
            if vfm_feats is not None:
                vfm_feats = vfm_feats.permute(0, 3, 1, 2)
            text = F.normalize(torch.as_tensor(self.text_classifier.embeddings), dim=-1)
        q2c = self.text_classifier.query_to_class.to(ref.device)
        return clip_feats.permute(0, 3, 1, 2), vfm_feats, text.to(ref.device), q2c
