"""Paired CLIP / VFM patch features of one image, cut with the segmentor's own sliding window.

The crops are exactly those of inference: the same crop loop
(:func:`gpua_mmseg.models.sliding.iter_crop_batches`, with the segmentor's window, crop batch and
patch-size padding), the same encoders, the same autocast.  Every patch of every crop is one
sample, so overlapping windows contribute their patches once per window, as they do at test time.
"""
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from ..models.sliding import iter_crop_batches

__all__ = ['extract_image_features', 'patch_majority_labels', 'preprocess_item']

Tensor = torch.Tensor


def patch_majority_labels(label: Tensor, patch: int, num_classes: int,
                          ignore_index: int = 255) -> Tensor:
    """Majority class of each ``patch x patch`` cell.

    Args:
        label: ``[h * patch, w * patch]`` integer class map (``ignore_index`` = void).
        patch: patch side in pixels.
        num_classes: labels ``>= num_classes`` (other than void) are treated as void too.

    Returns:
        ``[h * w]`` int64, row-major; ``-1`` where a cell has no valid pixel.  Ties go to the
        smaller class index.
    """
    H, W = label.shape
    if H % patch or W % patch:
        raise ValueError(f'label map {H}x{W} is not a multiple of the patch size {patch}')
    h, w = H // patch, W // patch
    lab = label.long().reshape(h, patch, w, patch).permute(0, 2, 1, 3).reshape(h * w, -1)
    lab = torch.where((lab < 0) | (lab >= num_classes) | (lab == ignore_index),
                      torch.full_like(lab, num_classes), lab)
    cell = torch.arange(h * w, device=lab.device)[:, None].expand_as(lab)
    counts = torch.bincount((cell * (num_classes + 1) + lab).reshape(-1),
                            minlength=h * w * (num_classes + 1)).reshape(h * w, num_classes + 1)
    counts = counts[:, :num_classes]
    out = counts.argmax(1)
    return torch.where(counts.sum(1) > 0, out, torch.full_like(out, -1))


def preprocess_item(segmentor, item: Dict) -> Tuple[Tensor, Optional[Tensor], dict]:
    """A dataset item (output of the test pipeline) -> ``(image01 [3, h, w], label [h, w] | None,
    metainfo)`` through the segmentor's own data preprocessor (RGB, 0..1, model device/dtype).

    The label is resized (nearest) to the image's test-time size ``h x w``, since MMSeg's test
    pipeline keeps the ground truth at the original size.
    """
    batch = segmentor.data_preprocessor(dict(inputs=[item['inputs']],
                                             data_samples=[item['data_samples']]), False)
    sample = batch['data_samples'][0]
    meta = sample.metainfo
    image01 = segmentor._valid_images(batch['inputs'], [meta])[0]
    label = None
    if 'gt_sem_seg' in sample:
        lab = sample.gt_sem_seg.data
        lab = lab[0] if lab.ndim == 3 else lab
        if tuple(lab.shape) != tuple(image01.shape[-2:]):
            lab = F.interpolate(lab[None, None].float(), size=tuple(image01.shape[-2:]),
                                mode='nearest')[0, 0]
        label = lab.long().to(image01.device)
    return image01, label, meta


@torch.no_grad()
def extract_image_features(segmentor, vfm_encoder, image01: Tensor,
                           label: Optional[Tensor] = None, ignore_index: int = 255,
                           keep_crops: bool = False) -> Dict[str, Tensor]:
    """Paired patch features of all sliding-window crops of one image.

    Args:
        segmentor: a :class:`GPUASegmentor` (its CLIP encoder, window, crop batch, autocast).
        vfm_encoder: the :class:`VFMEncoder` paired with it.
        image01: ``[3, H, W]`` RGB in 0..1 at the test-time size.
        label: optional ``[H, W]`` class map at the same size (for SOTAlign pairs).

    Returns:
        ``dict(clip=[R, dc], vfm=[R, dv], label=[R])`` with ``R`` = patches of all crops.  VFM
        tokens on a different patch grid (e.g. DINOv2 patch 14) are bilinearly resized to the
        CLIP grid, as the head resizes its logits at inference.  The VFM tokens follow the
        segmentor's ``vfm_window`` (``'whole'``: one VFM forward per image, resampled onto each
        crop's CLIP grid), exactly as inference computes them.  ``label`` is -1 without a mask.
        With ``keep_crops``, also ``crops``: per crop batch, in the order of
        :func:`~gpua_mmseg.models.sliding.iter_crop_batches` (that of inference),
        ``(clip_feats [n, h, w, dc], vfm_tokens [n, hv, wv, dv])`` as the encoders returned them
        (VFM tokens not resized), for
        :meth:`~gpua_mmseg.models.GPUASegmentor.logits_from_crop_features` (segmenting the
        fitted images without a second pass through the encoders).
    """
    if image01.ndim != 3 or image01.shape[0] != 3:
        raise ValueError(f'image01 must be [3, H, W] in 0..1, got {tuple(image01.shape)}')
    H, W = image01.shape[-2:]
    if label is not None and tuple(label.shape) != (H, W):
        raise ValueError(f'label {tuple(label.shape)} must match the image size {(H, W)}')
    clip = segmentor.clip_encoder
    p = clip.patch_size
    rows: Dict[Tuple[int, int, int, int], Tuple[Tensor, Tensor, Tensor]] = {}
    crops = []
    with segmentor._autocast(image01.device):
        # the segmentor's vfm_window, as at inference (models/vfm.py VFMWindowTokens)
        # (with overlap_encoders on CUDA a 'whole' / dict window's VFM runs beside CLIP)
        vfm_tokens = segmentor.vfm_window_tokens([image01], vfm_encoder,
                                                 side=segmentor.side_stream(image01.device))
        for batch, chunk in iter_crop_batches([image01], segmentor.slide_crop,
                                              segmentor.slide_stride,
                                              segmentor.crop_batch_size, size_divisor=p):
            c_in = clip.normalize(batch)
            if getattr(clip, 'needs_vfm', False):
                # ProxyCLIP's last block reads the same VFM tokens: one VFM forward for both
                v_feat = vfm_tokens.tokens(batch, chunk)
                c_feat = clip.patch_features(c_in, vfm_tokens=v_feat)     # [n, h, w, dc]
            else:
                c_feat = clip.patch_features(c_in)
                v_feat = vfm_tokens.tokens(batch, chunk)  # after CLIP is enqueued
            h, w = c_feat.shape[1:3]
            if keep_crops:
                crops.append((c_feat, v_feat))
            if tuple(v_feat.shape[1:3]) != (h, w):
                v_feat = F.interpolate(v_feat.permute(0, 3, 1, 2).float(), size=(h, w),
                                       mode='bilinear', align_corners=False
                                       ).permute(0, 2, 3, 1).to(v_feat.dtype)
            for j, (_, box, pad) in enumerate(chunk):
                if label is not None:
                    y1, y2, x1, x2 = box
                    lab = label[y1:y2, x1:x2]
                    lab = F.pad(lab, pad, value=ignore_index) if any(pad) else lab
                    lab = patch_majority_labels(lab, p, segmentor.num_classes, ignore_index)
                else:
                    lab = torch.full((h * w,), -1, dtype=torch.long)
                rows[box] = (c_feat[j].reshape(h * w, -1), v_feat[j].reshape(h * w, -1),
                             lab.cpu())
    # rows follow the window order of the image, whatever the grouping by crop shape
    ordered = [rows[b] for b in sorted(rows)]
    out = dict(clip=torch.cat([r[0] for r in ordered]), vfm=torch.cat([r[1] for r in ordered]),
               label=torch.cat([r[2] for r in ordered]))
    if keep_crops:
        out['crops'] = crops
    return out
