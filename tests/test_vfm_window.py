"""Issue 13: a VFM window of its own (``vfm_window='crop' | 'whole' | dict``).

* ``'crop'`` reproduces the per-crop computation that existed before ``vfm_window`` (1e-6);
* ``'whole'``: a VFM whose tokens are a known function of position (the mean image coordinate
  of each patch) gives, for every CLIP crop, the coordinates of that crop's CLIP patch centres:
  the resampling is in image coordinates, (y, x) the right way round (a transposed resample
  fails the same check), and the VFM runs once per image, at inference and in the fit's
  extraction alike;
* the memory cap and dict windows bound every VFM forward and still place the features right;
* ProxyCLIP keeps its per-crop VFM tokens; the API builds ProxyCLIP configs with their VFM.
"""
import pytest
import torch
import torch.nn as nn

import gpua_mmseg.models  # noqa: F401  (mmcv-lite placeholder before mmseg)
from _helpers import (TINY_VFM_KW, TINY_VOCAB, random_alignment, tiny_clip_encoder,
                      tiny_clip_model_cfg_default, tiny_dinov3_encoder)
from gpua_mmseg.fitting.extract import extract_image_features
from gpua_mmseg.models import vfm as vfm_module
from gpua_mmseg.models.backbone import query_logits
from gpua_mmseg.models.segmentor import GPUASegmentor
from gpua_mmseg.models.sliding import crop_boxes, iter_crop_batches, slide_logits
from gpua_mmseg.models.vfm import VFMEncoder, check_vfm_window
from mmseg.structures import SegDataSample

VOCAB = TINY_VOCAB
CLIP_CFG = tiny_clip_model_cfg_default()
VFM_KW = TINY_VFM_KW


@pytest.fixture(scope='module')
def clip():
    return tiny_clip_encoder('sclip')


@pytest.fixture(scope='module')
def dino():
    return tiny_dinov3_encoder()


def artifact(path, clip, vfm):
    return random_alignment(path, clip, vfm, VOCAB)


def gpua_segmentor(clip, vfm, head, **kw):
    kw = dict(dict(slide_crop=64, slide_stride=32, crop_batch_size=4), **kw)
    return GPUASegmentor(clip=clip, clip_mode='sclip', class_names=VOCAB, templates=['{}'],
                         vfm=vfm, decode_head=head, **kw).eval()


def images(*sizes, seed=2):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, h, w, generator=g) for h, w in sizes]


class PositionVFM(VFMEncoder):
    """A VFM whose token is the mean of its patch's pixels: on a coordinate image (channel 0 =
    pixel-centre y, channel 1 = x) every token is its patch centre in image pixels."""

    def __init__(self, patch_size=8):
        nn.Module.__init__(self)
        self.name, self.patch_size, self.embed_dim = 'position', patch_size, 3
        self.checkpoint = None
        self.model = nn.Identity()  # VFMEncoder.train() keeps it in eval mode
        self.calls, self.rows, self.tokens_per_forward = 0, 0, []

    def normalize(self, images01):
        return images01

    def patch_features(self, images):
        assert images.shape[-2] % self.patch_size == 0 and images.shape[-1] % self.patch_size == 0
        self.calls += 1
        self.rows += images.shape[0]
        out = nn.functional.avg_pool2d(images, self.patch_size).permute(0, 2, 3, 1)
        self.tokens_per_forward.append(out.shape[1] * out.shape[2])
        return out


def coordinate_image(h, w):
    ys = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w) + 0.5
    xs = torch.arange(w, dtype=torch.float32)[None, :].expand(h, w) + 0.5
    return torch.stack([ys, xs, torch.zeros(h, w)])


def position_errors(seg, image, vfm):
    """Per CLIP patch of every crop: |sampled token - expected position| (max over y, x),
    where expected = the patch centre clamped to the span of the VFM token centres."""
    H, W = image.shape[-2:]
    source = seg.vfm_window_tokens([image], vfm)
    p, half = seg.clip_encoder.patch_size, vfm.patch_size / 2
    errs = []
    for batch, chunk in iter_crop_batches([image], seg.slide_crop, seg.slide_stride,
                                          seg.crop_batch_size, size_divisor=p):
        tok = source.tokens(batch, chunk)
        h, w = batch.shape[-2] // p, batch.shape[-1] // p
        assert tok.shape == (len(chunk), h, w, 3)      # on the CLIP grid of the crop
        for j, c in enumerate(chunk):
            ys = c.box[0] - c.pad[2] + (torch.arange(h) + 0.5) * p
            xs = c.box[2] - c.pad[0] + (torch.arange(w) + 0.5) * p
            want_y = ys.clamp(half, H - half)[:, None].expand(h, w)
            want_x = xs.clamp(half, W - half)[None, :].expand(h, w)
            errs.append(torch.maximum((tok[j, ..., 0] - want_y).abs(),
                                      (tok[j, ..., 1] - want_x).abs()).flatten())
    return torch.cat(errs), source


class RecordingHead(nn.Module):
    """A head with only ``fuse`` that records the VFM tokens it is given."""
    needs_vfm = True

    def __init__(self):
        super().__init__()
        self.seen = []

    def fuse(self, clip_logits, vfm_tokens, text):
        self.seen.append(vfm_tokens.clone())
        return clip_logits


# ------------------------------------------------------------------ 'crop' = before
def test_crop_reproduces_the_per_crop_computation(clip, dino, tmp_path):
    path = artifact(tmp_path / 'a.safetensors', clip, dino)
    head = dict(type='GPUAHead', alignment_path=path, fusion_weight=0.5)
    imgs = images((80, 112), (50, 100))
    # the default is 'whole' (chosen on the toy world: docs/bench_speed_cpu.md); ProxyCLIP
    # keeps 'crop'
    assert gpua_segmentor(clip, dino, head).vfm_window == 'whole'
    for window in ('crop',):
        seg = gpua_segmentor(clip, dino, head, vfm_window=window)
        assert seg.vfm_window == 'crop'
        text = seg.get_text_embeddings()

        def before(crops):  # the crop loop as it was: VFM on the crop, fused by the head
            v = dino.patch_features(dino.normalize(crops))
            logits = query_logits(clip.patch_features(clip.normalize(crops)), text)
            return seg.decode_head.fuse(logits, v, text)

        with torch.no_grad():
            want = slide_logits(imgs, before, 64, 32, 4, size_divisor=16)
            got = seg._slide(imgs)
        for g, w in zip(got, want):
            assert (g - w).abs().max().item() <= 1e-6


def test_whole_equals_crop_when_the_image_is_one_crop(clip, dino, tmp_path):
    path = artifact(tmp_path / 'a.safetensors', clip, dino)
    head = dict(type='GPUAHead', alignment_path=path, fusion_weight=0.0)
    imgs = images((64, 64))
    with torch.no_grad():
        crop = gpua_segmentor(clip, dino, head, vfm_window='crop')._slide(imgs)[0]
        whole = gpua_segmentor(clip, dino, head, vfm_window='whole')._slide(imgs)[0]
    assert (crop - whole).abs().max().item() <= 1e-6


# ------------------------------------------------------------------ 'whole': geometry
@pytest.mark.parametrize('size', [(80, 112), (48, 112), (112, 80)])
def test_whole_resamples_in_image_coordinates(clip, size):
    vfm = PositionVFM(8)
    seg = gpua_segmentor(clip, vfm, RecordingHead(), vfm_window='whole')
    errs, source = position_errors(seg, coordinate_image(*size), vfm)
    assert errs.max().item() < 1e-4
    assert vfm.calls == 1 and vfm.rows == 1 and source.forwards == 1


def test_a_transposed_resample_fails_the_position_check(clip, monkeypatch):
    grid_sample = torch.nn.functional.grid_sample

    def transposed(inp, grid, *a, **k):  # (y, x) where grid_sample reads (x, y)
        return grid_sample(inp, grid.flip(-1), *a, **k)

    monkeypatch.setattr(vfm_module.F, 'grid_sample', transposed)
    vfm = PositionVFM(8)
    seg = gpua_segmentor(clip, vfm, RecordingHead(), vfm_window='whole')
    errs, _ = position_errors(seg, coordinate_image(80, 112), vfm)
    assert errs.max().item() > 8.0


def test_crop_mode_tokens_are_those_of_the_crop(clip):
    # the same check in 'crop' mode, on the crop's own VFM grid: the reference semantics
    vfm = PositionVFM(16)
    seg = gpua_segmentor(clip, vfm, RecordingHead(), vfm_window='crop')
    errs, source = position_errors(seg, coordinate_image(80, 112), vfm)
    assert errs.max().item() < 1e-4
    assert vfm.rows == len(crop_boxes(80, 112, 64, 32))


# ------------------------------------------------------------------ one VFM pass per image
def test_whole_runs_the_vfm_once_per_image_at_inference(clip):
    vfm, head = PositionVFM(8), RecordingHead()
    seg = gpua_segmentor(clip, vfm, head, vfm_window='whole', crop_batch_size=3)
    x = torch.rand(2, 3, 80, 112) * 255
    metas = [dict(img_shape=(80, 112), ori_shape=(80, 112))] * 2
    with torch.no_grad():
        seg.predict(x, [SegDataSample(metainfo=m) for m in metas])
    assert vfm.rows == 2 and vfm.calls == 1     # both images in one batched forward
    n_crops = 2 * len(crop_boxes(80, 112, 64, 32))
    assert sum(t.shape[0] for t in head.seen) == n_crops
    assert all(t.shape[1:3] == (4, 4) for t in head.seen)     # the CLIP grid of a 64 crop

    seg_crop = gpua_segmentor(clip, PositionVFM(8), RecordingHead(), vfm_window='crop',
                              crop_batch_size=3)
    with torch.no_grad():
        seg_crop.predict(x, [SegDataSample(metainfo=m) for m in metas])
    assert seg_crop.vfm_encoder.rows == n_crops


def test_fit_extraction_uses_the_same_window(clip, dino, tmp_path):
    calls = []
    original = dino.model.forward_features

    def counting(x):
        calls.append(tuple(x.shape))
        return original(x)

    path = artifact(tmp_path / 'a.safetensors', clip, dino)
    head = dict(type='GPUAHead', alignment_path=path, fusion_weight=0.5)
    seg = gpua_segmentor(clip, dino, head, vfm_window='whole')
    image = images((80, 112))[0]
    dino.model.forward_features = counting
    try:
        feats = extract_image_features(seg, dino, image)
        assert calls == [(1, 3, 80, 112)]
        # the rows are the tokens inference hands the head, crop by crop in box order
        source = seg.vfm_window_tokens([image])
        rows = {}
        for batch, chunk in iter_crop_batches([image], 64, 32, 4, size_divisor=16):
            tok = source.tokens(batch, chunk)
            for j, c in enumerate(chunk):
                rows[c.box] = tok[j].reshape(-1, tok.shape[-1])
        want = torch.cat([rows[b] for b in sorted(rows)])
        assert feats['vfm'].shape == want.shape
        assert (feats['vfm'] - want).abs().max().item() <= 1e-6
    finally:
        del dino.model.forward_features


# ------------------------------------------------------------------ cap and dict windows
def test_memory_cap_falls_back_to_windows(clip):
    vfm = PositionVFM(8)
    seg = gpua_segmentor(clip, vfm, RecordingHead(), vfm_window='whole', vfm_max_tokens=16)
    errs, source = position_errors(seg, coordinate_image(80, 112), vfm)
    assert max(vfm.tokens_per_forward) <= 16 * 4      # batches of windows of <= 16 tokens
    assert vfm.rows == len(crop_boxes(80, 112, 32, 24)) > 1
    # window borders clamp to the window's outer token centres: off by < half a VFM patch
    assert errs.max().item() <= 4.0 + 1e-4
    assert errs.median().item() < 1e-4


def test_dict_window(clip):
    vfm = PositionVFM(8)
    seg = gpua_segmentor(clip, vfm, RecordingHead(), vfm_window=dict(crop_size=48, stride=32))
    errs, _ = position_errors(seg, coordinate_image(80, 112), vfm)
    assert vfm.rows == len(crop_boxes(80, 112, 48, 32))
    assert errs.max().item() <= 4.0 + 1e-4 and errs.median().item() < 1e-4


def test_lambda_one_runs_no_vfm(clip, dino, tmp_path):
    path = artifact(tmp_path / 'a.safetensors', clip, dino)
    vfm = PositionVFM(8)
    seg = gpua_segmentor(clip, dino, dict(type='GPUAHead', alignment_path=path,
                                          fusion_weight=1.0), vfm_window='whole')
    seg.vfm_encoder = vfm
    with torch.no_grad():
        seg._slide(images((80, 112)))
    assert vfm.calls == 0


# ------------------------------------------------------------------ bad input, ProxyCLIP
def test_bad_vfm_window_values(clip):
    for bad in ('full', dict(crop_size=32), dict(crop_size=32, stride=48), 3):
        with pytest.raises(ValueError, match='vfm_window must be'):
            check_vfm_window(bad)
    with pytest.raises(ValueError, match='vfm_max_tokens must be an int >= 1'):
        gpua_segmentor(clip, PositionVFM(8), RecordingHead(), vfm_max_tokens=0)
    seg = gpua_segmentor(clip, PositionVFM(8), RecordingHead(), vfm_window='whole')
    with pytest.raises(ValueError, match='slide_crops'):
        seg.crop_logit_parts(torch.rand(1, 3, 64, 64))


def test_proxyclip_keeps_crop_tokens(dino):
    proxy = tiny_clip_encoder('proxyclip')
    kw = dict(clip=proxy, clip_mode='proxyclip', class_names=VOCAB, templates=['{}'],
              vfm=dino, slide_crop=64, slide_stride=32)
    assert GPUASegmentor(**kw).vfm_window == 'crop'
    with pytest.raises(ValueError, match="ProxyCLIP's attention reads the VFM tokens"):
        GPUASegmentor(vfm_window='whole', **kw)


def test_api_builds_proxyclip_with_its_vfm():
    from gpua_mmseg.apis import OpenVocabSegmenter
    tiny_clip = dict(name='tiny', pretrained=None, model_cfg=CLIP_CFG)
    opts = {'model.clip': tiny_clip, 'model.templates': ['{}'],
            'model.vfm.model_kwargs': VFM_KW,
            'test_pipeline': [dict(type='Resize', scale=(512, 64), keep_ratio=True)],
            'model.slide_crop': 64, 'model.slide_stride': 32}
    seg = OpenVocabSegmenter('proxyclip', classes='cat; sofa; background', weights='random',
                             device='cpu', cfg_options=opts)
    assert seg.model.vfm_encoder is not None and seg.model.clip_mode == 'proxyclip'
    result = seg(torch.randint(0, 255, (70, 90, 3), dtype=torch.uint8).numpy())
    labels = getattr(result, 'labels', result)
    assert tuple(torch.as_tensor(labels).shape) == (70, 90)
