"""Batched sliding-window inference (pure torch, no mm* imports).

The window geometry follows MMSeg's ``slide_inference``: ``ceil((H - crop) / stride) + 1``
windows per axis, the last window flush with the border, and an axis shorter than the crop
gets a single window of the image's own length.  Unlike MMSeg, the crops of *all* images of
a batch are gathered and sent through the encoder in chunks of ``crop_batch_size``; each
chunk's logits are upsampled crop by crop and added onto per-image canvases immediately, so
full-resolution logits of more than one crop are never alive at once.

A crop whose side is not a multiple of ``size_divisor`` (only possible when the image is
smaller than the crop) is zero-padded symmetrically before encoding, and the padded part of
its upsampled logits is cut away again; crops are grouped by padded shape so each encoder
call sees a uniform batch.  :func:`iter_crop_batches` is that crop loop, the one used both by
inference and by feature extraction for fitting (``gpua_mmseg.fitting.extract``).
"""
from typing import Callable, Dict, Iterator, List, NamedTuple, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

Box = Tuple[int, int, int, int]  # (y1, y2, x1, x2), half-open, in pixels
EncodeFn = Callable[[Tensor], Tensor]


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f'{name} must be a positive int, got {value!r}; '
                         f'set e.g. slide_crop=224, slide_stride=112, crop_batch_size=32')
    return value


def _pair(name: str, value) -> Tuple[int, int]:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f'{name} must be an int or a pair (h, w), got {value!r}')
        return _check_positive_int(name, value[0]), _check_positive_int(name, value[1])
    v = _check_positive_int(name, value)
    return v, v


def _axis_starts(size: int, crop: int, stride: int) -> List[Tuple[int, int]]:
    n = max(size - crop + stride - 1, 0) // stride + 1
    spans = []
    for i in range(n):
        end = min(i * stride + crop, size)
        spans.append((max(end - crop, 0), end))
    return spans


def crop_boxes(height: int, width: int, crop: Union[int, Sequence[int]],
               stride: Union[int, Sequence[int]]) -> List[Box]:
    """Windows covering an image, row-major.

    Args:
        height, width: image size in pixels.
        crop: window size in pixels (int or (h, w)).
        stride: step between window starts in pixels (int or (h, w)); must be <= crop so the
            windows cover the image.

    Returns:
        list of ``(y1, y2, x1, x2)`` half-open boxes; the last box of each axis ends at the
        border; a box is shorter than ``crop`` only along an axis shorter than ``crop``.
    """
    _check_positive_int('height', height)
    _check_positive_int('width', width)
    ch, cw = _pair('crop', crop)
    sh, sw = _pair('stride', stride)
    if sh > ch or sw > cw:
        raise ValueError(f'stride {(sh, sw)} larger than crop {(ch, cw)} would leave gaps; '
                         'use slide_stride <= slide_crop')
    return [(y1, y2, x1, x2)
            for (y1, y2) in _axis_starts(height, ch, sh)
            for (x1, x2) in _axis_starts(width, cw, sw)]


def count_map(height: int, width: int, crop, stride, device=None,
              dtype: torch.dtype = torch.float32) -> Tensor:
    """Number of windows covering each pixel, ``[H, W]`` (every entry >= 1)."""
    counts = torch.zeros(height, width, device=device, dtype=dtype)
    for y1, y2, x1, x2 in crop_boxes(height, width, crop, stride):
        counts[y1:y2, x1:x2] += 1
    return counts


def symmetric_pad(h: int, w: int, divisor: int) -> Tuple[int, int, int, int]:
    """Zero padding that brings an ``h x w`` crop to multiples of ``divisor``.

    Returns:
        ``(left, right, top, bottom)`` in pixels, the order ``F.pad`` takes for the last two
        dims; the odd pixel goes to the right / bottom.
    """
    ph = (-h) % divisor
    pw = (-w) % divisor
    return pw // 2, pw - pw // 2, ph // 2, ph - ph // 2


def resize_to_patch_multiple(images: Tensor, patch: int) -> Tensor:
    """Bilinearly resize ``[B, C, H, W]`` to the nearest multiples of ``patch`` (>= 1 patch).

    A ViT's patch grid then covers the whole input, so its token map spans the same pixels as
    any other encoder's grid of that input; sides that already are multiples are returned
    untouched (no resampling).
    """
    h, w = images.shape[-2:]
    th = max(1, int(round(h / patch))) * patch
    tw = max(1, int(round(w / patch))) * patch
    if (th, tw) == (h, w):
        return images
    return F.interpolate(images, size=(th, tw), mode='bilinear', align_corners=False)


class Crop(NamedTuple):
    """One window: ``box = (y1, y2, x1, x2)`` (half-open pixels) of image number ``image``,
    zero-padded by ``pad = (left, right, top, bottom)`` pixels (see :func:`symmetric_pad`)."""
    image: int
    box: Box
    pad: Tuple[int, int, int, int]


def _as_image_list(images: Union[Tensor, Sequence[Tensor]]) -> List[Tensor]:
    if isinstance(images, Tensor):
        if images.dim() != 4:
            raise ValueError(f'images must be [B, C, H, W] or a list of [C, H, W], '
                             f'got shape {tuple(images.shape)}')
        return list(images.unbind(0))
    imgs = list(images)
    if not imgs:
        raise ValueError('images is empty; pass at least one [C, H, W] image')
    for i, im in enumerate(imgs):
        if not isinstance(im, Tensor) or im.dim() != 3:
            raise ValueError(f'images[{i}] must be a [C, H, W] tensor, got '
                             f'{type(im).__name__} {getattr(im, "shape", "")}')
    return imgs


def iter_crop_batches(images: Union[Tensor, Sequence[Tensor]],
                      crop: Union[int, Sequence[int], None],
                      stride: Union[int, Sequence[int], None], crop_batch_size: int = 32,
                      size_divisor: int = 1) -> Iterator[Tuple[Tensor, List[Crop]]]:
    """The crop loop shared by inference (:func:`slide_logits`) and feature extraction.

    Every window of every image (:func:`crop_boxes`; ``crop`` 0 / None: the whole image is one
    window) is zero-padded symmetrically to multiples of ``size_divisor``; windows are grouped
    by padded shape, so that each batch is uniform, and cut into chunks of at most
    ``crop_batch_size``.

    Args:
        images: list of ``[C, H_i, W_i]`` tensors, or a ``[B, C, H, W]`` tensor.
        crop, stride: window size / step in pixels (int or (h, w)).

    Yields:
        ``(batch [n, C, h, w], crops)``: the padded crops and, per row, its :class:`Crop`.
    """
    imgs = _as_image_list(images)
    crop_batch_size = _check_positive_int('crop_batch_size', crop_batch_size)
    size_divisor = _check_positive_int('size_divisor', size_divisor)
    groups: Dict[Tuple[int, int], List[Crop]] = {}
    for i, im in enumerate(imgs):
        h, w = im.shape[-2:]
        for box in (crop_boxes(h, w, crop, stride) if crop else [(0, h, 0, w)]):
            y1, y2, x1, x2 = box
            pad = symmetric_pad(y2 - y1, x2 - x1, size_divisor)
            shape = (y2 - y1 + pad[2] + pad[3], x2 - x1 + pad[0] + pad[1])
            groups.setdefault(shape, []).append(Crop(i, box, pad))
    for items in groups.values():
        for start in range(0, len(items), crop_batch_size):
            chunk = items[start:start + crop_batch_size]
            batch = []
            for c in chunk:
                y1, y2, x1, x2 = c.box
                patch = imgs[c.image][..., y1:y2, x1:x2]
                batch.append(F.pad(patch, c.pad) if any(c.pad) else patch)
            yield torch.stack(batch, 0), chunk


def slide_logits(images: Union[Tensor, Sequence[Tensor]], encode_fn: EncodeFn,
                 crop: Union[int, Sequence[int], None] = 224,
                 stride: Union[int, Sequence[int], None] = 112,
                 crop_batch_size: int = 32, size_divisor: int = 1,
                 accum_dtype: torch.dtype = None, with_crops: bool = False) -> List[Tensor]:
    """Sliding-window logits for a batch of (possibly differently sized) images.

    Args:
        images: ``[B, C, H, W]`` tensor or list of ``[C, H_i, W_i]`` tensors, already
            normalised for the encoder.
        encode_fn: maps crops ``[n, C, h, w]`` (n <= crop_batch_size, h and w multiples of
            ``size_divisor``) to logits ``[n, Q, h', w']`` on any grid (typically the patch
            grid h/p x w/p); logits are bilinearly upsampled to ``h x w``.
        crop, stride: window size / step in pixels (int or (h, w)); ``crop`` 0 / None: each
            image is one window.
        crop_batch_size: crops per ``encode_fn`` call; 1 reproduces crop-by-crop inference.
        size_divisor: crops are zero-padded symmetrically to multiples of this (the patch
            size); the padding is removed from the upsampled logits.
        accum_dtype: canvas dtype; default promotes the logits dtype with the image dtype.
        with_crops: call ``encode_fn(crops, crop_list)`` with the batch's :class:`Crop` list
            (image index, box, padding), for encoders that need the crops' positions (a VFM
            window of its own, :class:`~gpua_mmseg.models.vfm.VFMWindowTokens`).

    Returns:
        list of ``[Q, H_i, W_i]`` averaged logits, one per image, on the images' device.
    """
    imgs = _as_image_list(images)
    canvases: List[Tensor] = [None] * len(imgs)  # allocated once Q and dtype are known
    for batch, chunk in iter_crop_batches(imgs, crop, stride, crop_batch_size, size_divisor):
        logits = encode_fn(batch, chunk) if with_crops else encode_fn(batch)
        if logits.dim() != 4 or logits.shape[0] != len(chunk):
            raise ValueError(f'encode_fn must return [n={len(chunk)}, Q, h, w] logits, '
                             f'got shape {tuple(logits.shape)}')
        ph, pw = batch.shape[-2:]
        for j, (i, (y1, y2, x1, x2), (pl, _, pt, _)) in enumerate(chunk):
            # One crop at a time: full-res logits of a whole chunk can be GBs (Q=171, n=32).
            up = logits[j:j + 1]
            if tuple(up.shape[-2:]) != (ph, pw):
                up = F.interpolate(up, size=(ph, pw), mode='bilinear', align_corners=False)
            up = up[0, :, pt:pt + y2 - y1, pl:pl + x2 - x1]
            if canvases[i] is None:
                dtype = accum_dtype or torch.promote_types(up.dtype, imgs[i].dtype)
                canvases[i] = up.new_zeros((up.shape[0],) + tuple(imgs[i].shape[-2:]),
                                           dtype=dtype)
            elif canvases[i].shape[0] != up.shape[0]:
                raise ValueError('encode_fn returned a varying number of channels '
                                 f'({canvases[i].shape[0]} vs {up.shape[0]})')
            canvases[i][:, y1:y2, x1:x2] += up.to(canvases[i].dtype)

    if not crop:  # one window per image: nothing to average
        return canvases
    return [canvas / count_map(im.shape[-2], im.shape[-1], crop, stride, device=canvas.device,
                               dtype=canvas.dtype) for im, canvas in zip(imgs, canvases)]
