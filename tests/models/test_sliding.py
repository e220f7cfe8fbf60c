import pytest
import torch
import torch.nn.functional as F

import gpua_mmseg.models  # noqa: F401  (mmcv placeholder first)
from gpua_mmseg.models.sliding import count_map, crop_boxes, slide_logits


def _mmseg_boxes(h, w, crop, stride):
    """Independent re-statement of MMSeg's slide_inference window loop."""
    hg = max(h - crop + stride - 1, 0) // stride + 1
    wg = max(w - crop + stride - 1, 0) // stride + 1
    out = []
    for i in range(hg):
        for j in range(wg):
            y2 = min(i * stride + crop, h)
            x2 = min(j * stride + crop, w)
            out.append((max(y2 - crop, 0), y2, max(x2 - crop, 0), x2))
    return out


@pytest.mark.parametrize('h,w', [(336, 448), (224, 224), (100, 300), (225, 500), (50, 60)])
def test_crop_boxes_match_mmseg_and_cover(h, w):
    boxes = crop_boxes(h, w, 224, 112)
    assert boxes == _mmseg_boxes(h, w, 224, 112)
    cover = torch.zeros(h, w)
    for y1, y2, x1, x2 in boxes:
        assert y2 - y1 == min(224, h) and x2 - x1 == min(224, w)
        cover[y1:y2, x1:x2] = 1
    assert cover.all()


def test_voc_sized_image_has_six_crops():
    assert len(crop_boxes(336, 448, 224, 112)) == 6


def test_count_map_values():
    # 336 x 448 with 224/112: rows split at 112/224, columns at 112/224/336.
    c = count_map(336, 448, 224, 112)
    assert c.shape == (336, 448)
    assert c[0, 0] == 1 and c[0, 447] == 1 and c[335, 0] == 1
    assert c[150, 0] == 2        # two row windows overlap
    assert c[0, 150] == 2 and c[0, 250] == 2
    assert c[150, 150] == 4
    assert c.sum() == 6 * 224 * 224


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match='stride'):
        crop_boxes(100, 100, 32, 64)
    with pytest.raises(ValueError, match='crop_batch_size'):
        slide_logits(torch.zeros(1, 3, 8, 8), lambda x: x, 4, 2, crop_batch_size=0)


def _pointwise(x):
    # Pixel-wise nonlinear map with a different number of output channels.
    return torch.cat([x.sin(), (x[:, :1] * x[:, 1:2]), x.square()], dim=1)


@pytest.mark.parametrize('cbs', [1, 3, 100])
def test_pointwise_encoder_reproduces_full_image(cbs):
    g = torch.Generator().manual_seed(0)
    imgs = [torch.randn(3, 70, 90, generator=g), torch.randn(3, 40, 33, generator=g)]
    out = slide_logits(imgs, _pointwise, crop=32, stride=20, crop_batch_size=cbs)
    for im, o in zip(imgs, out):
        assert o.shape == (7, im.shape[1], im.shape[2])
        torch.testing.assert_close(o, _pointwise(im[None])[0], atol=1e-6, rtol=1e-6)


def test_batch_tensor_input_and_padding_divisor():
    # Image smaller than the crop along H: the 30-pixel crop is padded to 32, cut back after.
    x = torch.randn(2, 3, 30, 80)
    out = slide_logits(x, _pointwise, crop=32, stride=16, crop_batch_size=4, size_divisor=8)
    for i in range(2):
        torch.testing.assert_close(out[i], _pointwise(x[i:i + 1])[0], atol=1e-6, rtol=1e-6)


def test_patch_grid_upsampling_and_averaging():
    # "Encoder" = 4x4 average pool (a patch grid); compare with an explicit per-crop loop.
    x = torch.randn(1, 2, 48, 64)
    enc = lambda c: F.avg_pool2d(c, 4)  # noqa: E731
    ref = torch.zeros(2, 48, 64)
    cnt = torch.zeros(1, 48, 64)
    for y1, y2, x1, x2 in crop_boxes(48, 64, 32, 16):
        up = F.interpolate(enc(x[:, :, y1:y2, x1:x2]), size=(32, 32), mode='bilinear',
                           align_corners=False)
        ref[:, y1:y2, x1:x2] += up[0]
        cnt[:, y1:y2, x1:x2] += 1
    out = slide_logits(x, enc, crop=32, stride=16, crop_batch_size=5)[0]
    torch.testing.assert_close(out, ref / cnt)
    # The count map is not trivially 1: averaging matters here.
    assert cnt.max() == 4


def test_chunking_calls_encoder_with_bounded_batches():
    sizes = []

    def enc(c):
        sizes.append(c.shape[0])
        return c

    slide_logits([torch.randn(3, 64, 64), torch.randn(3, 48, 80)], enc, 32, 16,
                 crop_batch_size=4)
    n = len(crop_boxes(64, 64, 32, 16)) + len(crop_boxes(48, 80, 32, 16))
    assert sum(sizes) == n and max(sizes) <= 4 and len(sizes) == -(-n // 4)


def test_iter_crop_batches_whole_images_and_padding():
    from gpua_mmseg.models.sliding import iter_crop_batches
    imgs = [torch.randn(3, 30, 40), torch.randn(3, 30, 40), torch.randn(3, 17, 16)]
    out = list(iter_crop_batches(imgs, 0, None, crop_batch_size=8, size_divisor=16))
    # crop 0: one window per image; same padded shapes share a batch
    assert [tuple(b.shape) for b, _ in out] == [(2, 3, 32, 48), (1, 3, 32, 16)]
    (_, crops), (small, (c,)) = out
    assert [cr.image for cr in crops] == [0, 1] and crops[0].box == (0, 30, 0, 40)
    assert crops[0].pad == (4, 4, 1, 1) and c.pad == (0, 0, 7, 8)
    left, _, top, _ = c.pad
    assert torch.equal(small[0, :, top:top + 17, left:left + 16], imgs[2])
    assert small[0, :, :top].abs().sum() == 0
