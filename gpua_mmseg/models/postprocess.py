"""From query logits to class scores and a label map (pure torch, batch-aware).

``probs = softmax(logit_scale * logits)`` over the Q queries, then each class takes the max
over its queries (synonyms).  Then, optionally: foreground classes covering too little of the
foreground argmax area are dropped (``area_thd``), and pixels whose best score is below
``prob_thd`` become the background class ``bg_idx``.

Memory bound for the original-size output (issue 11).  The segmentor produces logits
``[Q, h, w]`` at the working resolution and must return labels at the original ``(H0, W0)``.
Upsampling the logits to full size first costs ``Q x H0 x W0`` floats per intermediate (an
8000 x 8000 photo with 21 classes: 5.4 GB for one tensor, several alive at once), so:

* ``Q x H0 x W0 <= FULL_RES_MAX_ELEMENTS`` (2**27, i.e. 512 MiB per fp32 intermediate; every
  benchmark image: Cityscapes 19 x 2048 x 1024 = 4e7, ADE20K / COCO-Stuff 150-171 classes up to
  ~900 x 900): the plain full-resolution path, unchanged (``F.interpolate`` then
  :func:`query_to_class_scores` / :func:`predict_labels`); ``seg_logits`` are ``[C, H0, W0]``.
* larger: :func:`tiled_scores_and_labels` upsamples (the same bilinear, ``align_corners=False``),
  softmaxes, maxes over synonyms and takes the argmax in bands of output rows holding at most
  ``TILE_MAX_ELEMENTS`` (2**24) query values each.  Peak extra memory is then about
  ``6 x TILE_MAX_ELEMENTS x itemsize`` (~400 MB in fp32) + the int64 labels (8 bytes per
  output pixel: 512 MB at 8000 x 8000) + ``C x h x w`` scores, independent of ``C x H0 x W0``.
  The class scores returned (stored as ``seg_logits``) are then the scores at the *working*
  resolution ``[C, h, w]`` -- a shape different from ``pred_sem_seg``'s ``[1, H0, W0]`` is the
  flag; MMSeg's ``IoUMetric`` and ``--out`` only read ``pred_sem_seg``.  Labels equal the full
  path's up to float rounding of the bilinear weights (a pixel whose two best scores differ by
  less than ~1e-6 may flip).
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

# Largest Q x H0 x W0 handled at full resolution in one piece (see the module docstring).
FULL_RES_MAX_ELEMENTS = 2 ** 27
# Query values (Q x rows x W0) per band of the tiled path.
TILE_MAX_ELEMENTS = 2 ** 24


def query_to_class_scores(logits: Tensor, query_to_class: Tensor, num_classes: int = None,
                          logit_scale: float = 1.0) -> Tensor:
    """Class scores ``[B, C, H, W]`` in [0, 1] from query logits ``[B, Q, H, W]``.

    Args:
        logits: cosine logits (unitless, in [-1, 1]) over the Q queries, channel dim 1.
        query_to_class: ``[Q]`` int, class index of each query.
        num_classes: C; default ``query_to_class.max() + 1``.
        logit_scale: temperature multiplier applied before the softmax over queries.
    """
    if logits.dim() < 2:
        raise ValueError(f'logits must be [B, Q, ...], got {tuple(logits.shape)}')
    q2c = torch.as_tensor(query_to_class, device=logits.device).long()
    if q2c.dim() != 1 or q2c.numel() != logits.shape[1]:
        raise ValueError(f'query_to_class must be [Q={logits.shape[1]}], got '
                         f'{tuple(q2c.shape)}; it must list one class index per text query')
    if num_classes is None:
        num_classes = int(q2c.max()) + 1
    if q2c.min() < 0 or q2c.max() >= num_classes:
        raise ValueError(f'query_to_class has indices outside [0, {num_classes}); '
                         'check the class-name file')
    probs = torch.softmax(logits * logit_scale, dim=1)
    if num_classes == q2c.numel() and torch.equal(q2c, torch.arange(num_classes,
                                                                     device=q2c.device)):
        return probs  # no synonyms: identity mapping
    shape = list(probs.shape)
    shape[1] = num_classes
    # Probabilities are >= 0, so zeros are a neutral start for the max.
    out = probs.new_zeros(shape)
    index = q2c.view([1, -1] + [1] * (probs.dim() - 2)).expand_as(probs)
    return out.scatter_reduce(1, index, probs, reduce='amax', include_self=True)


def _small_class_keep(area: Tensor, area_thd: float, bg_idx: Optional[int]) -> Tensor:
    """``[B, C]`` bool: classes kept given their argmax pixel counts ``area`` ``[B, C]``."""
    if not 0.0 <= float(area_thd) <= 1.0:
        raise ValueError(f'area_thd must be in [0, 1] (a fraction of the foreground area), '
                         f'got {area_thd!r}')
    c = area.shape[1]
    fg = torch.ones(c, dtype=torch.bool, device=area.device)
    if bg_idx is not None:
        fg[bg_idx] = False
    fg_area = (area * fg).sum(dim=1, keepdim=True)
    drop = fg & (area.to(torch.float64) <= float(area_thd) * fg_area.to(torch.float64))
    return ~drop


def _argmax_area(labels: Tensor, num_classes: int) -> Tensor:
    """``[B, C]`` int64 pixel count per class of a label map ``[B, ...]``."""
    b = labels.shape[0]
    flat = labels.reshape(b, -1)
    area = torch.zeros(b, num_classes, device=labels.device, dtype=torch.long)
    return area.scatter_add_(1, flat, torch.ones_like(flat))


def drop_small_classes(scores: Tensor, area_thd: float, bg_idx: Optional[int] = 0) -> Tensor:
    """Zero the scores of foreground classes whose argmax area is too small.

    A class c != bg_idx is dropped in image b when its argmax pixel count is
    ``<= area_thd x`` the image's total foreground argmax pixel count; its pixels then go to
    the next-best class.  ``scores``: ``[B, C, H, W]``; returns a new tensor.
    """
    b, c = scores.shape[:2]
    keep = _small_class_keep(_argmax_area(scores.argmax(dim=1), c), area_thd, bg_idx)
    return scores * keep.to(scores.dtype).view(b, c, *([1] * (scores.dim() - 2)))


def predict_labels(scores: Tensor, prob_thd: float = 0.0, area_thd: Optional[float] = None,
                   bg_idx: Optional[int] = 0) -> Tensor:
    """Label map ``[B, H, W]`` (int64) from class scores ``[B, C, H, W]``.

    Args:
        scores: per-class probabilities (after the synonym max).
        prob_thd: pixels whose (post-area-drop) max score is ``< prob_thd`` get ``bg_idx``;
            0 disables.
        area_thd: see :func:`drop_small_classes`; None disables.
        bg_idx: background class index, or None for datasets without one (then prob_thd
            must be 0 and area_thd treats every class as foreground).
    """
    if scores.dim() < 3:
        raise ValueError(f'scores must be [B, C, H, W], got {tuple(scores.shape)}')
    c = scores.shape[1]
    if bg_idx is not None and not 0 <= bg_idx < c:
        raise ValueError(f'bg_idx={bg_idx} is not a class index in [0, {c}); '
                         'set bg_idx=None for datasets without a background class')
    if prob_thd and bg_idx is None:
        raise ValueError('prob_thd > 0 needs a background class; set bg_idx (usually 0) or '
                         'prob_thd=0')
    if area_thd is not None:
        scores = drop_small_classes(scores, area_thd, bg_idx)
    best, labels = scores.max(dim=1)
    if prob_thd:
        labels = torch.where(best < prob_thd, torch.full_like(labels, bg_idx), labels)
    return labels


# ---------------------------------------------------------------- bounded-memory path
def fits_full_resolution(num_queries: int, out_size: Sequence[int]) -> bool:
    """True when ``num_queries x H0 x W0 <= FULL_RES_MAX_ELEMENTS`` (plain path)."""
    return int(num_queries) * int(out_size[0]) * int(out_size[1]) <= FULL_RES_MAX_ELEMENTS


def _bilinear_taps(n_in: int, n_out: int, device) -> Tuple[Tensor, Tensor, Tensor]:
    """Source rows ``i0, i1`` ``[n_out]`` and the weight ``lam`` of ``i1`` for a bilinear resize
    ``n_in -> n_out`` with ``align_corners=False``, in float32 as ``F.interpolate`` computes
    them (``src = max(scale * (dst + 0.5) - 0.5, 0)``, ``scale = n_in / n_out``)."""
    scale = torch.tensor(n_in, dtype=torch.float32) / n_out
    src = (torch.arange(n_out, dtype=torch.float32) + 0.5) * scale - 0.5
    src = src.clamp(min=0.0)
    i0 = src.long().clamp(max=n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    return i0.to(device), i1.to(device), (src - i0).to(device)


def _band_scores(logits: Tensor, rows: Tuple[Tensor, Tensor, Tensor], out_w: int,
                 query_to_class: Tensor, num_classes: int, logit_scale: float) -> Tensor:
    """Class scores ``[B, C, band, W0]`` of one band of output rows."""
    r0, r1, rl = rows
    rl = rl.to(logits.dtype).view(1, 1, -1, 1)
    # Height: lerp of the two source rows of each output row, on the narrow [B, Q, band, w];
    # width: F.interpolate itself (its height scale is 1 here, i.e. the identity).
    x = logits.index_select(2, r0) * (1 - rl) + logits.index_select(2, r1) * rl
    x = F.interpolate(x, size=(x.shape[2], out_w), mode='bilinear', align_corners=False)
    return query_to_class_scores(x, query_to_class, num_classes, logit_scale)


def tiled_scores_and_labels(logits: Tensor, out_size: Sequence[int], query_to_class: Tensor,
                            num_classes: Optional[int] = None, logit_scale: float = 1.0,
                            prob_thd: float = 0.0, area_thd: Optional[float] = None,
                            bg_idx: Optional[int] = 0,
                            tile_elements: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """Bounded-memory equivalent of resize + :func:`query_to_class_scores` +
    :func:`predict_labels` (see the module docstring for the bound).

    Args:
        logits: ``[B, Q, h, w]`` query logits at the working resolution.
        out_size: ``(H0, W0)`` of the label map.
        query_to_class, num_classes, logit_scale: as for :func:`query_to_class_scores`.
        prob_thd, area_thd, bg_idx: as for :func:`predict_labels` (``area_thd`` counts argmax
            areas at full resolution, in a first pass over the bands).
        tile_elements: query values per band (default ``TILE_MAX_ELEMENTS``).

    Returns:
        ``(scores [B, C, h, w]`` at the working resolution, ``labels [B, H0, W0]`` int64).
    """
    if logits.dim() != 4:
        raise ValueError(f'logits must be [B, Q, h, w], got {tuple(logits.shape)}')
    b, q, h, w = logits.shape
    H0, W0 = int(out_size[0]), int(out_size[1])
    scores_small = query_to_class_scores(logits, query_to_class, num_classes, logit_scale)
    c = scores_small.shape[1]
    # Threshold arguments are checked once, on a 1-pixel call, with predict_labels' messages.
    predict_labels(scores_small[:, :, :1, :1], prob_thd, None, bg_idx)
    budget = int(tile_elements or TILE_MAX_ELEMENTS)
    band = max(1, budget // max(1, b * max(q, c) * W0))
    rows = _bilinear_taps(h, H0, logits.device)
    q2c = torch.as_tensor(query_to_class, device=logits.device).long()

    def bands():
        for y in range(0, H0, band):
            sl = slice(y, min(H0, y + band))
            yield sl, _band_scores(logits, tuple(t[sl] for t in rows), W0, q2c, c,
                                   logit_scale)

    keep = None
    if area_thd is not None:
        area = torch.zeros(b, c, dtype=torch.long, device=logits.device)
        for _, sc in bands():
            area += _argmax_area(sc.argmax(dim=1), c)
        keep = _small_class_keep(area, area_thd, bg_idx).to(logits.dtype).view(b, c, 1, 1)
    labels = torch.empty((b, H0, W0), dtype=torch.long, device=logits.device)
    for sl, sc in bands():
        if keep is not None:
            sc = sc * keep
        labels[:, sl] = predict_labels(sc, prob_thd, None, bg_idx)
    return scores_small, labels
