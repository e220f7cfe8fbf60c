"""GPUA on ProxyCLIP adds the map and nothing else (issue 12: cost over ProxyCLIP = the map).

Op-level accounting with torch.profiler on tiny random models: every op of the encoders (VFM and
CLIP layer norms, attention, MLPs, interpolations, normalisations of the input) runs exactly as
often with the GPUA head as without it; the extra calls are the map's (a few matmuls and norms,
one mix), and none of them is a float64 op.  Timing is tools/benchmark.py's job, not a test's."""
import collections

import torch
from torch.profiler import ProfilerActivity, profile

import pytest

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


def _seg(parts, lam=None):
    clip, vfm, path = parts
    kw = dict(clip=clip, clip_mode='proxyclip', class_names=NAMES, templates=['{}'],
              slide_crop=64, slide_stride=32, crop_batch_size=2, vfm=vfm)
    if lam is not None:
        kw['decode_head'] = dict(type='GPUAHead', alignment_path=path, fusion_weight=lam)
    return GPUASegmentor(**kw).eval()


def _predict(seg):
    x = torch.rand(1, 3, 64, 128, generator=torch.Generator().manual_seed(1)) * 255  # 3 crops
    seg.predict(x, [SegDataSample(metainfo=dict(img_shape=(64, 128), ori_shape=(64, 128)))])

# ops of the two encoders and the post-processing; GPUA must not add a single call of these
ENCODER_OPS = ('aten::layer_norm', 'aten::gelu', 'aten::addmm', 'aten::convolution',
               'aten::scaled_dot_product_attention', 'aten::upsample_bilinear2d',
               'aten::softmax', 'aten::sub', 'aten::grid_sampler_2d', 'aten::cat')
# the map (normalise, centre, W, normalise, cosine to the text) and the mix
MAP_OPS = {'aten::linalg_vector_norm', 'aten::clamp_min', 'aten::div', 'aten::matmul',
           'aten::mm', 'aten::mul', 'aten::add', 'aten::expand', 'aten::expand_as',
           'aten::to', 'aten::_to_copy', 'aten::copy_', 'aten::empty_strided', 'aten::view',
           'aten::reshape', 'aten::_unsafe_view', 'aten::permute', 'aten::t',
           'aten::transpose', 'aten::as_strided', 'aten::resolve_conj', 'aten::numpy_T',
           'aten::contiguous', 'aten::clone', 'aten::empty_like', 'aten::unsqueeze',
           'aten::sum', 'aten::sqrt', 'aten::norm', 'aten::lerp', 'aten::rsub',
           'aten::empty', 'aten::detach', 'aten::alias', 'aten::result_type'}


def _op_counts(seg):
    with torch.no_grad():
        _predict(seg)                       # text embeddings and lazy state outside the count
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            _predict(seg)
    counts = collections.Counter()
    f64 = []
    for e in prof.events():
        counts[e.name] += 1
        # a float64 tensor input (Python scalars show as 0-d 'double' with shape [])
        for dtype, shape in zip(e.input_dtypes or (), e.input_shapes or ()):
            if dtype == 'double' and shape:
                f64.append((e.name, shape))
    return counts, f64


def test_gpua_on_proxyclip_adds_only_the_map(parts):  # noqa: F811
    base, _ = _op_counts(_seg(parts))
    fused, f64 = _op_counts(_seg(parts, lam=0.5))
    for op in ENCODER_OPS:
        assert fused[op] == base[op], (op, base[op], fused[op])
    extra = {op for op in fused if fused[op] > base[op]}
    assert extra and extra <= MAP_OPS, sorted(extra - MAP_OPS)
    assert not f64, f64
