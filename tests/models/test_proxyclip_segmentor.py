"""ProxyCLIP inside GPUASegmentor, alone and with GPUA on top: one VFM forward per crop batch
serves both the proxy attention and the GPUA logits, and the fused output is exactly
λ·ProxyCLIP + (1 − λ)·GPUA."""
import pytest
import torch

import gpua_mmseg.models  # noqa: F401  (mmcv-lite placeholder before mmseg)
from gpua_mmseg.alignment import AlignmentMap, vocabulary_hash
from gpua_mmseg.models.clip import build_clip_encoder, tiny_clip_model_cfg
from gpua_mmseg.models.segmentor import GPUASegmentor
from gpua_mmseg.models.vfm import build_vfm_encoder
from mmseg.structures import SegDataSample

VFM = 'vit_base_patch16_dinov3.lvd1689m'
NAMES = [['sky', 'wall'], 'cat', 'dog']


@pytest.fixture(scope='module')
def parts(tmp_path_factory):
    torch.manual_seed(0)
    clip = build_clip_encoder(dict(name='tiny', pretrained=None, model_cfg=tiny_clip_model_cfg(
        width=32, layers=2, heads=2, embed_dim=16, text_width=32, text_layers=1, text_heads=2,
        context_length=16)), mode='proxyclip').eval()
    vfm = build_vfm_encoder(dict(name=VFM, pretrained=False, model_kwargs=dict(
        embed_dim=24, depth=1, num_heads=2, img_size=64))).eval()
    g = torch.Generator().manual_seed(3)
    w = torch.linalg.qr(torch.randn(24, 16, generator=g, dtype=torch.float64))[0].float()
    path = str(tmp_path_factory.mktemp('art') / 'a.safetensors')
    AlignmentMap(w, dict(vfm=VFM, vlm='tiny', vocabulary=NAMES,
                         vocab_hash=vocabulary_hash(NAMES))).save(path)
    return clip, vfm, path


def _seg(parts, lam=None, crop_batch_size=2):
    clip, vfm, path = parts
    kw = dict(clip=clip, clip_mode='proxyclip', class_names=NAMES, templates=['{}'],
              slide_crop=64, slide_stride=32, crop_batch_size=crop_batch_size, vfm=vfm)
    if lam is not None:
        kw['decode_head'] = dict(type='GPUAHead', alignment_path=path, fusion_weight=lam)
    return GPUASegmentor(**kw).eval()


class _Counter:
    def __init__(self, vfm):
        self.n, self.vfm, self.orig = 0, vfm, vfm.model.forward_features

    def __enter__(self):
        def counted(*a, **k):
            self.n += 1
            return self.orig(*a, **k)
        self.vfm.model.forward_features = counted
        return self

    def __exit__(self, *exc):
        del self.vfm.model.forward_features


def _predict(seg):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, 64, 128, generator=g) * 255     # 3 crops of 64 (stride 32)
    out = seg.predict(x, [SegDataSample(metainfo=dict(img_shape=(64, 128),
                                                      ori_shape=(64, 128)))])[0]
    return out.seg_logits.data


def test_gpua_on_proxyclip_runs_the_vfm_once(parts):
    proxy, fused = _seg(parts), _seg(parts, lam=0.5)
    with _Counter(parts[1]) as c:
        _predict(proxy)
    n_proxy = c.n
    with _Counter(parts[1]) as c:
        _predict(fused)
    # 3 crops in batches of 2 -> 2 VFM forwards, for ProxyCLIP alone and with GPUA
    assert n_proxy == 2 and c.n == n_proxy


def test_fused_is_linear_mix_of_proxyclip_and_gpua(parts):
    clip, vfm, _ = parts
    crops = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    seg_p, seg_g = _seg(parts), _seg(parts, lam=0.0)
    seg_f = _seg(parts, lam=0.3)
    with torch.no_grad():
        p, g, f = seg_p.crop_logits(crops), seg_g.crop_logits(crops), seg_f.crop_logits(crops)
    torch.testing.assert_close(f, 0.3 * p + 0.7 * g, rtol=1e-5, atol=1e-6)
    assert (p - g).abs().max() > 1e-2
    # λ = 1: ProxyCLIP exactly, and still one VFM forward (the attention needs it)
    seg_1 = _seg(parts, lam=1.0)
    with _Counter(vfm) as c, torch.no_grad():
        one = seg_1.crop_logits(crops)
    assert c.n == 1 and torch.equal(one, p)


def test_proxyclip_without_vfm_is_refused(parts):
    clip = parts[0]
    with pytest.raises(ValueError, match="needs.*vfm=dict|computes its attention from VFM"):
        GPUASegmentor(clip=clip, clip_mode='proxyclip', class_names=NAMES, templates=['{}'])


def test_detaching_gpua_keeps_proxyclip_vfm(parts):
    seg = _seg(parts, lam=0.5)
    seg.attach_gpua(None, None)
    assert seg.decode_head is None and seg.vfm_encoder is not None
    torch.testing.assert_close(_predict(seg), _predict(_seg(parts)))
