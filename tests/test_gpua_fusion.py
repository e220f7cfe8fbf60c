"""GPUA fusion inside GPUASegmentor: λ = 1 is the CLIP baseline exactly, λ = 0 the GPUA logits
alone (checked against AlignmentMap.logits, an independent implementation), fusion is linear
in λ, and an artifact fitted for another identity is refused with the refit command."""
import pytest
import torch

import gpua_mmseg.models  # noqa: F401  (mmcv-lite placeholder before mmseg)
from gpua_mmseg.alignment import AlignmentMap, vocabulary_hash
from gpua_mmseg.models.clip import build_clip_encoder, tiny_clip_model_cfg
from gpua_mmseg.models.segmentor import GPUASegmentor
from gpua_mmseg.models.sliding import slide_logits
from gpua_mmseg.models.vfm import build_vfm_encoder
from mmseg.structures import SegDataSample

VFM = 'vit_base_patch16_dinov3.lvd1689m'
NAMES = [['sky', 'wall'], 'cat', ['dog', 'puppy'], 'car']
QUERIES = ['sky', 'wall', 'cat', 'dog', 'puppy', 'car']


@pytest.fixture(scope='module')
def encoders():
    torch.manual_seed(0)
    clip = build_clip_encoder(dict(name='tiny', pretrained=None, model_cfg=tiny_clip_model_cfg(
        width=32, layers=2, heads=2, embed_dim=16, text_width=32, text_layers=1, text_heads=2,
        context_length=16)), mode='sclip').eval()
    vfm = build_vfm_encoder(dict(name=VFM, pretrained=False,
                                 model_kwargs=dict(embed_dim=24, depth=1, num_heads=2,
                                                   img_size=64))).eval()
    return clip, vfm


def write_artifact(path, dv=24, dc=16, vocab=NAMES, vfm=VFM, vlm='tiny', seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.linalg.qr(torch.randn(dv, dc, generator=g, dtype=torch.float64))[0].float()
    meta = dict(vfm=vfm, vlm=vlm, vocabulary=list(vocab), vocab_hash=vocabulary_hash(vocab))
    AlignmentMap(W, meta, mu_v=0.1 * torch.randn(dv, generator=g)).save(str(path))
    return str(path)


def segmentor(encoders, artifact=None, lam=0.9, names=NAMES, **head):
    clip, vfm = encoders
    kw = dict(clip=clip, clip_mode='sclip', class_names=names, templates=['{}'],
              slide_crop=64, slide_stride=32, crop_batch_size=2, logit_scale=40.0)
    if artifact is not None:
        kw.update(vfm=vfm, decode_head=dict(type='GPUAHead', alignment_path=artifact,
                                            fusion_weight=lam, **head))
    return GPUASegmentor(**kw).eval()


def images():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, 64, 96, generator=g) * 255
    return x, [SegDataSample(metainfo=dict(img_shape=(64, 96), ori_shape=(64, 96)))]


def predict(seg):
    x, samples = images()
    out = seg.predict(x, samples)[0]
    return out.seg_logits.data, out.pred_sem_seg.data


def test_lambda_one_reproduces_the_baseline_exactly(encoders, tmp_path):
    base = predict(segmentor(encoders))
    fused = predict(segmentor(encoders, write_artifact(tmp_path / 'a.safetensors'), lam=1.0))
    assert torch.equal(base[0], fused[0]) and torch.equal(base[1], fused[1])


def test_lambda_zero_is_the_gpua_logits_alone(encoders, tmp_path):
    path = write_artifact(tmp_path / 'a.safetensors')
    seg = segmentor(encoders, path, lam=0.0)
    got, _ = predict(seg)
    # expected: AlignmentMap.logits on the VFM tokens of every window, stitched, post-processed
    amap = AlignmentMap.load(path)
    _, vfm = encoders
    text = seg.get_text_embeddings()

    def gpua_only(crops01):
        tokens = vfm.patch_features(vfm.normalize(crops01))
        return amap.logits(tokens, text).permute(0, 3, 1, 2)

    x, samples = images()
    with torch.no_grad():
        stitched = slide_logits([x[0] / 255.0], gpua_only, 64, 32, 2, size_divisor=16)[0]
        want, _ = seg.postprocess_one(x[0] / 255.0, stitched, samples[0].metainfo)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    base, _ = predict(segmentor(encoders))
    assert (got - base).abs().max() > 1e-3       # GPUA logits really replaced CLIP's


def test_fusion_is_linear_in_lambda(encoders, tmp_path):
    path = write_artifact(tmp_path / 'a.safetensors')
    x, samples = images()
    raw = {lam: segmentor(encoders, path, lam=lam)._forward(x, samples) for lam in (0.0, 0.3, 1.0)}
    torch.testing.assert_close(raw[0.3], 0.3 * raw[1.0] + 0.7 * raw[0.0], atol=1e-6, rtol=0)


@pytest.mark.parametrize('change, message', [
    (dict(vocab=NAMES[:-1]), 'vocab_hash'),
    (dict(vocab=QUERIES), 'vocab_hash'),          # the flat query list is another vocabulary
    (dict(vfm='vit_small_patch16_dinov3.lvd1689m'), 'vfm'),
    (dict(vlm='ViT-B-16'), 'vlm'),
    (dict(dv=32), 'VFM dim'),
])
def test_mismatched_artifact_is_refused_with_refit_command(encoders, tmp_path, change, message):
    path = write_artifact(tmp_path / 'a.safetensors', **change)
    with pytest.raises(ValueError, match=message) as err:
        segmentor(encoders, path, config_path='configs/gpua/my.py')
    assert f'python tools/fit_alignment.py configs/gpua/my.py --out {path}' in str(err.value)
