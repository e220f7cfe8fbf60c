"""GPUAHead: training-free decode head that maps VFM patch tokens into CLIP space.

It holds a fitted :class:`gpua_mmseg.alignment.AlignmentMap` (an orthogonal ``W`` of shape
``[dv, dc]``, method.md §6/§8) and lets it do the maths: the map transforms the tokens, scores
them against the text embeddings (cosine or CSLS, per crop) and checks its own identity.  The
head only fuses the result with the CLIP logits::

    gpua   = AlignmentMap.logits(v, t)        normalise(normalise(v - mu_v) @ W) . normalise(t)
    fused  = fusion_weight * clip + (1 - fusion_weight) * gpua

Two ways to use it:

* inside :class:`~gpua_mmseg.models.GPUASegmentor` (``decode_head=dict(type='GPUAHead', ...)``),
  which calls :meth:`fuse` on its batched crops;
* as the ``decode_head`` of MMSeg's own ``EncoderDecoder`` behind the
  :class:`~gpua_mmseg.models.backbone.GPUATwoTowerBackbone`: :meth:`forward` then takes the
  backbone's outputs and returns ``logit_scale x`` class logits, MMSeg's ``BaseDecodeHead``
  conventions (``predict``, ``predict_by_feat``, ``num_classes``, ``align_corners``).

Nothing here is trained: the head has no parameters and writes nothing into checkpoints (the
artifact file stays the single source of truth); the map's tensors follow ``.to(device)``.
"""
import os
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS

__all__ = ['GPUAHead']

_EXPECTED_KEYS = ('dv', 'dc', 'vocabulary', 'vfm', 'vlm', 'vfm_weights', 'vlm_weights',
                  'vlm_activation', 'clip_mode', 'prototype_mode', 'vocab_hash')


def _refit_command(config_path: Optional[str], alignment_path: str) -> str:
    return f'python tools/fit_alignment.py {config_path or "CONFIG"} --out {alignment_path}'


@MODELS.register_module()
class GPUAHead(BaseDecodeHead):
    """Training-free GPUA head: VFM tokens -> CLIP space -> logits, fused with CLIP logits.

    Args:
        alignment_path: fitted AlignmentMap artifact (``tools/fit_alignment.py`` writes it).
        fusion_weight: ``λ`` in ``[0, 1]``; weight of the CLIP logits (0.9 in the paper).
            At ``λ = 1`` the VFM is not run at all (:attr:`needs_vfm` is False).
        similarity: ``'cosine'`` (default) or ``'csls'`` (hubness-corrected, per crop; see
            :meth:`gpua_mmseg.alignment.AlignmentMap.logits`).
        csls_k: neighbourhood size for CSLS.
        expected: optional dict checked against the artifact right away: ``dv``, ``dc``,
            ``vocabulary`` (anything ``Vocabulary.parse`` accepts) and any identity key
            (``vfm``, ``vlm``, ``clip_mode``, ... see ``gpua_mmseg.models.identity``).
        config_path: config file to print in refit instructions (placeholder ``CONFIG``).
        num_classes: classes of the vocabulary; needed only as the ``decode_head`` of MMSeg's
            ``EncoderDecoder`` (which reads it), checked there against the backbone's vocabulary.
        logit_scale: softmax temperature of the ``EncoderDecoder`` form: :meth:`forward` returns
            ``logit_scale x`` logits so that their softmax is the class probabilities.
        align_corners, ignore_index: as in MMSeg's ``BaseDecodeHead``.

    Raises:
        FileNotFoundError: the artifact does not exist (the message gives the command to fit it).
        ValueError: bad arguments, or ``expected`` does not match the artifact.
    """

    def __init__(self, alignment_path: str, fusion_weight: float = 0.9,
                 similarity: str = 'cosine', csls_k: int = 10,
                 expected: Optional[Dict[str, Any]] = None,
                 config_path: Optional[str] = None, num_classes: Optional[int] = None,
                 logit_scale: float = 40.0, align_corners: bool = False,
                 ignore_index: int = 255, init_cfg: Optional[dict] = None):
        # BaseDecodeHead.__init__ would build a trainable 1x1 classifier and a loss; here the
        # classifier is the text embeddings and there is nothing to train, so only the
        # attributes MMSeg's segmentors read are set.
        BaseModule.__init__(self, init_cfg)
        if not 0.0 <= float(fusion_weight) <= 1.0:
            raise ValueError(f'fusion_weight must lie in [0, 1] (weight of the CLIP logits), '
                             f'got {fusion_weight}')
        if similarity not in ('cosine', 'csls'):
            raise ValueError(f"similarity must be 'cosine' or 'csls', got {similarity!r}")
        if int(csls_k) < 1:
            raise ValueError(f'csls_k must be a positive integer, got {csls_k}')
        if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
            raise ValueError(f'num_classes must be a positive int or None, got {num_classes!r}')
        if not float(logit_scale) > 0:
            raise ValueError(f'logit_scale must be > 0, got {logit_scale!r}')
        self.alignment_path = os.path.abspath(os.path.expanduser(os.fspath(alignment_path)))
        self.config_path = config_path
        self.fusion_weight = float(fusion_weight)
        self.similarity = similarity
        self.csls_k = int(csls_k)
        self.logit_scale = float(logit_scale)
        self.num_classes = num_classes
        self.out_channels = num_classes
        self.threshold = None
        self.align_corners = align_corners
        self.ignore_index = ignore_index
        self.in_index, self.input_transform = -1, None
        self.dropout = self.sampler = None
        self._resize_logged = False

        if not os.path.isfile(self.alignment_path):
            raise FileNotFoundError(
                f'GPUA alignment artifact not found: {self.alignment_path}\n'
                'Fit it first (unsupervised, no labels needed) with:\n'
                f'    {_refit_command(config_path, self.alignment_path)}')
        from gpua_mmseg.alignment import AlignmentMap  # models may import alignment, not reverse
        self.amap = AlignmentMap.load(self.alignment_path)
        self.in_channels, self.channels = self.amap.dv, self.amap.dc
        if expected is not None:
            unknown = sorted(set(expected) - set(_EXPECTED_KEYS))
            if unknown:
                raise ValueError(f'unknown keys {unknown} in GPUAHead expected=; '
                                 f'allowed: {list(_EXPECTED_KEYS)}')
            rest = {k: v for k, v in expected.items() if k not in ('dv', 'dc', 'vocabulary')}
            self.validate(dv=expected.get('dv'), dc=expected.get('dc'),
                          vocabulary=expected.get('vocabulary'), identity=rest)

    # ------------------------------------------------------------------ the map
    def _apply(self, fn, *args, **kwargs):
        # The map is a plain object, not a buffer: move its tensors with the module, so that no
        # host-to-device copy of W happens per crop batch.
        out = super()._apply(fn, *args, **kwargs)
        for name in ('W', 'mu_v', 'csls_r'):
            t = getattr(self.amap, name)
            if t is not None:
                setattr(self.amap, name, fn(t))
        return out

    @property
    def W(self) -> torch.Tensor:
        """``[dv, dc]`` orthogonal map (the artifact's, on the head's device)."""
        return self.amap.W

    @property
    def meta(self) -> Dict[str, Any]:
        """The artifact's metadata."""
        return self.amap.meta

    @property
    def dv(self) -> int:
        """VFM token width (rows of ``W``)."""
        return self.amap.dv

    @property
    def dc(self) -> int:
        """CLIP joint-space width (columns of ``W``)."""
        return self.amap.dc

    @property
    def needs_vfm(self) -> bool:
        """False at ``fusion_weight == 1``: the GPUA term has weight 0, skip the VFM forward."""
        return self.fusion_weight < 1.0

    def validate(self, dv: Optional[int] = None, dc: Optional[int] = None,
                 vocabulary=None, identity: Optional[Dict[str, Any]] = None,
                 config_path: Optional[str] = None) -> None:
        """Check the artifact against the encoders' widths and an expected identity.

        Delegates to :meth:`gpua_mmseg.alignment.AlignmentMap.validate`; arguments left as
        ``None`` are not checked.

        Args:
            dv, dc: VFM / CLIP feature widths.
            vocabulary: the vocabulary in use (compared by its canonical hash).
            identity: e.g. :func:`gpua_mmseg.models.identity.artifact_identity`'s result.
            config_path: config named in the refit command (default: the head's).

        Raises:
            ValueError: naming each mismatch, the artifact and the command that refits it.
        """
        self.amap.validate(dv=dv, dc=dc, vocabulary=vocabulary, identity=identity,
                           source=f'GPUA alignment artifact {self.alignment_path}',
                           refit=_refit_command(config_path or self.config_path,
                                                self.alignment_path))

    # ------------------------------------------------------------------ logits
    def gpua_logits(self, vfm_tokens: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """Similarity of the mapped VFM tokens to the text embeddings, crop by crop.

        Args:
            vfm_tokens: ``[B, h, w, dv]`` VFM patch tokens (any scale; centred with the
                artifact's ``mu_v`` if it has one, normalised by the map).
            text_emb: ``[Q, dc]`` text embeddings, one per query (normalised by the map).

        Returns:
            ``[B, Q, h, w]`` cosine logits in ``[-1, 1]`` (or CSLS scores, whose neighbourhoods
            are those of each crop alone), in the dtype of ``vfm_tokens``.
        """
        if vfm_tokens.ndim != 4 or vfm_tokens.shape[-1] != self.dv:
            raise ValueError(f'vfm_tokens must be [B, h, w, dv={self.dv}], got '
                             f'{tuple(vfm_tokens.shape)}; is the artifact fitted for this VFM?')
        if text_emb.ndim != 2 or text_emb.shape[-1] != self.dc:
            raise ValueError(f'text_emb must be [Q, dc={self.dc}], got {tuple(text_emb.shape)}; '
                             'is the artifact fitted for this CLIP model?')
        scores = self.amap.logits(vfm_tokens, text_emb, similarity=self.similarity,
                                  csls_k=self.csls_k, per_item=True)
        return scores.permute(0, 3, 1, 2)

    def fuse(self, clip_logits: torch.Tensor, vfm_tokens: Optional[torch.Tensor],
             text_emb: torch.Tensor) -> torch.Tensor:
        """``λ · clip_logits + (1 − λ) · gpua_logits`` on the CLIP patch grid.

        If the VFM grid differs from the CLIP grid (e.g. DINOv2 patch 14 against CLIP patch 16),
        the GPUA logit map is bilinearly resized to the CLIP grid (both span the same crop, see
        :meth:`VFMEncoder.patch_features`); this is logged once per head.

        Args:
            clip_logits: ``[B, Q, hc, wc]`` CLIP cosine logits.
            vfm_tokens: ``[B, hv, wv, dv]`` VFM patch tokens of the same crops (``None`` is
                accepted when :attr:`needs_vfm` is False).
            text_emb: ``[Q, dc]`` text embeddings.

        Returns:
            ``[B, Q, hc, wc]`` fused logits in the dtype of ``clip_logits``. ``λ = 1`` returns
            ``clip_logits`` itself and ``λ = 0`` exactly the (resized) GPUA logits.
        """
        if clip_logits.ndim != 4:
            raise ValueError(f'clip_logits must be [B, Q, h, w], got {tuple(clip_logits.shape)}')
        if text_emb.ndim != 2 or text_emb.shape[0] != clip_logits.shape[1]:
            raise ValueError(f'text_emb {tuple(text_emb.shape)} must have one row per query of '
                             f'clip_logits {tuple(clip_logits.shape)}')
        if not self.needs_vfm:
            return clip_logits
        if (vfm_tokens is None or vfm_tokens.ndim != 4
                or vfm_tokens.shape[0] != clip_logits.shape[0]):
            raise ValueError(f'vfm_tokens {None if vfm_tokens is None else tuple(vfm_tokens.shape)}'
                             f' must be [B, h, w, dv] with the same batch size as clip_logits '
                             f'{tuple(clip_logits.shape)}')
        return self.mix(clip_logits, self.gpua_on_grid(vfm_tokens, text_emb, clip_logits))

    def gpua_on_grid(self, vfm_tokens: torch.Tensor, text_emb: torch.Tensor,
                     like: torch.Tensor) -> torch.Tensor:
        """GPUA logits ``[B, Q, hc, wc]`` on the grid, device and dtype of ``like`` (the CLIP
        logits), bilinearly resized if the VFM grid differs (logged once)."""
        gpua = self.gpua_logits(vfm_tokens, text_emb)
        clip_grid = tuple(like.shape[-2:])
        if tuple(gpua.shape[-2:]) != clip_grid:
            if not self._resize_logged:
                print_log(f'GPUAHead: VFM patch grid {tuple(gpua.shape[-2:])} differs from the '
                          f'CLIP grid {clip_grid} (different patch sizes); GPUA logits are '
                          'bilinearly resized to the CLIP grid', logger='current')
                self._resize_logged = True
            gpua = F.interpolate(gpua, size=clip_grid, mode='bilinear',
                                 align_corners=False)
        return gpua.to(device=like.device, dtype=like.dtype)

    def mix(self, clip_logits: torch.Tensor, gpua: torch.Tensor,
            fusion_weight: Optional[float] = None) -> torch.Tensor:
        """``λ·clip + (1 − λ)·gpua`` (λ = ``fusion_weight``, default the head's); λ = 1 returns
        ``clip_logits`` and λ = 0 ``gpua`` themselves."""
        lam = self.fusion_weight if fusion_weight is None else float(fusion_weight)
        if lam == 1.0:
            return clip_logits
        if lam == 0.0:
            return gpua
        return lam * clip_logits + (1.0 - lam) * gpua

    # ------------------------------------------------------------------ MMSeg decode head
    def forward(self, inputs, vfm_tokens: Optional[torch.Tensor] = None,
                text_emb: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Two call forms.

        * ``forward(clip_logits, vfm_tokens, text_emb)``: alias of :meth:`fuse`.
        * ``forward(backbone_outputs)`` (MMSeg ``EncoderDecoder``): the tuple of
          :class:`~gpua_mmseg.models.backbone.GPUATwoTowerBackbone` -- ``(clip [B, dc, h, w],
          vfm [B, dv, hv, wv] or None, text [Q, dc], query_to_class [Q])`` -- to
          ``[B, num_classes, h, w]`` class logits: ``logit_scale x`` the fused logits, max over
          each class's synonyms (their softmax over classes equals GPUASegmentor's class
          scores when every class has one query).
        """
        if text_emb is not None:
            return self.fuse(inputs, vfm_tokens, text_emb)
        from .backbone import query_logits
        clip_feats, vfm_feats, text, q2c = self._unpack(inputs)
        logits = query_logits(clip_feats.permute(0, 2, 3, 1), text)
        vfm = None if vfm_feats is None or not self.needs_vfm else vfm_feats.permute(0, 2, 3, 1)
        if vfm is None and self.needs_vfm:
            raise ValueError('GPUAHead (fusion_weight < 1) needs VFM features: give the '
                             'GPUATwoTowerBackbone a vfm=dict(...)')
        logits = self.fuse(logits, vfm, text) * self.logit_scale
        if q2c.numel() == self.num_classes and torch.equal(
                q2c, torch.arange(self.num_classes, device=q2c.device)):
            return logits
        index = q2c.view(1, -1, 1, 1).expand_as(logits)
        out = logits.new_full((logits.shape[0], self.num_classes) + logits.shape[2:],
                              float('-inf'))
        return out.scatter_reduce(1, index, logits, reduce='amax', include_self=True)

    def _unpack(self, inputs) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor,
                                       torch.Tensor]:
        if not isinstance(inputs, (tuple, list)) or len(inputs) != 4:
            raise ValueError('GPUAHead as an EncoderDecoder decode_head expects the 4 outputs '
                             'of backbone=dict(type="GPUATwoTowerBackbone", ...), got '
                             f'{type(inputs).__name__}')
        clip_feats, vfm_feats, text, q2c = inputs
        if self.num_classes is None:
            raise ValueError('GPUAHead in an EncoderDecoder needs num_classes= (the number of '
                             'classes of the backbone\'s class_names)')
        n = int(q2c.max()) + 1
        if n != self.num_classes:
            raise ValueError(f'decode_head num_classes={self.num_classes}, but the backbone\'s '
                             f'vocabulary has {n} classes; set num_classes={n}')
        return clip_feats, vfm_feats, text, q2c.to(clip_feats.device).long()

    def loss(self, inputs, batch_data_samples, train_cfg) -> dict:
        """GPUA is training-free: always raises ``RuntimeError`` (fit with fit_alignment.py)."""
        return self.loss_by_feat(None, batch_data_samples)

    def loss_by_feat(self, seg_logits, batch_data_samples) -> dict:
        """See :meth:`loss`."""
        raise RuntimeError('GPUAHead is training-free: it has no loss. Fit its alignment map '
                           'with tools/fit_alignment.py and use it for inference only')

    def extra_repr(self) -> str:
        return (f'alignment_path={self.alignment_path!r}, dv={self.dv}, dc={self.dc}, '
                f'fusion_weight={self.fusion_weight}, similarity={self.similarity!r}')
