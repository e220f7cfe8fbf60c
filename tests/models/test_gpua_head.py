"""GPUAHead: artifact loading / validation (delegated to AlignmentMap), GPUA logits, fusion and
grid resize (synthetic)."""
import pytest
import torch
import torch.nn.functional as F

import gpua_mmseg.models  # noqa: F401  (mmcv placeholder before anything mm*)
from gpua_mmseg.alignment import AlignmentMap, vocabulary_hash
from gpua_mmseg.models import gpua_head as gpua_head_module
from gpua_mmseg.models.gpua_head import GPUAHead
from mmseg.registry import MODELS

VFM = 'vit_base_patch16_dinov3.lvd1689m'
VLM = 'ViT-B-16'
VOCAB = ['background', 'cat', 'dog', 'person in shirt']


def _orthogonal(dv, dc, seed=0):
    """Random W with orthonormal columns (dv >= dc) or orthonormal rows (dv < dc)."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(max(dv, dc), min(dv, dc), generator=gen,
                                       dtype=torch.float64))
    w = q if dv >= dc else q.T
    return w.float().contiguous()


def _artifact(tmp_path, w, vocab=VOCAB, vfm=VFM, vlm=VLM, name='amap.safetensors',
              store_names=True, mu_v=None, csls_r=None):
    path = tmp_path / name
    meta = dict(vfm=vfm, vlm=vlm, vocab_hash=vocabulary_hash(vocab))
    if store_names:
        meta['vocabulary'] = list(vocab)
    AlignmentMap(w, meta, mu_v, csls_r).save(str(path))
    return str(path)


def _inputs(b=2, h=3, w=4, dv=12, q=len(VOCAB), dc=8, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(b, q, h, w, generator=gen), torch.randn(b, h, w, dv, generator=gen) * 3,
            torch.randn(q, dc, generator=gen))


def test_gpua_logits_are_cosines_of_mapped_tokens(tmp_path):
    dv = dc = 8
    w = _orthogonal(dv, dc)
    head = GPUAHead(_artifact(tmp_path, w))
    tokens = torch.randn(1, 2, 3, dv) * 5
    # choose each text embedding as the image of one token: its logit there must be exactly 1
    text = torch.stack([tokens[0, 0, 0] @ w * 2.0, tokens[0, 1, 2] @ w * 0.5,
                        -(tokens[0, 0, 1] @ w), torch.randn(dc)])
    logits = head.gpua_logits(tokens, text)
    assert logits.shape == (1, 4, 2, 3)
    assert logits.abs().max() <= 1 + 1e-5
    torch.testing.assert_close(logits[0, 0, 0, 0], torch.tensor(1.0))
    torch.testing.assert_close(logits[0, 1, 1, 2], torch.tensor(1.0))
    torch.testing.assert_close(logits[0, 2, 0, 1], torch.tensor(-1.0))
    # the same numbers through the artifact API
    amap = AlignmentMap.load(head.alignment_path)
    ref = amap.logits(tokens, F.normalize(text, dim=-1)).permute(0, 3, 1, 2)
    torch.testing.assert_close(logits, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('dv,dc', [(12, 8), (8, 12)])
def test_fusion_extremes_and_mix(tmp_path, dv, dc):
    path = _artifact(tmp_path, _orthogonal(dv, dc))
    clip, tokens, text = _inputs(dv=dv, dc=dc)
    only_clip = GPUAHead(path, fusion_weight=1.0)
    assert torch.equal(only_clip.fuse(clip, tokens, text), clip)
    only_gpua = GPUAHead(path, fusion_weight=0.0)
    gpua = only_gpua.gpua_logits(tokens, text)
    assert torch.equal(only_gpua.fuse(clip, tokens, text), gpua)
    assert not torch.allclose(gpua, clip)
    mixed = GPUAHead(path, fusion_weight=0.9)(clip, tokens, text)
    torch.testing.assert_close(mixed, 0.9 * clip + 0.1 * gpua)


def test_grid_resize_logged_once(tmp_path, monkeypatch):
    messages = []
    monkeypatch.setattr(gpua_head_module, 'print_log', lambda msg, **kw: messages.append(msg))
    head = GPUAHead(_artifact(tmp_path, _orthogonal(12, 8)), fusion_weight=0.0)
    clip = torch.zeros(2, 4, 14, 14)                     # CLIP B/16 on a 224 crop
    tokens = torch.randn(2, 16, 16, 12)                  # DINOv2 patch 14 on the same crop
    text = torch.randn(4, 8)
    out = head.fuse(clip, tokens, text)
    assert out.shape == (2, 4, 14, 14)
    expected = F.interpolate(head.gpua_logits(tokens, text), size=(14, 14), mode='bilinear',
                             align_corners=False)
    torch.testing.assert_close(out, expected)
    head.fuse(clip, tokens, text)
    assert len(messages) == 1 and '(16, 16)' in messages[0] and '(14, 14)' in messages[0]
    # a spatially constant token map must stay constant after resizing
    const = torch.randn(1, 1, 1, 12).expand(1, 16, 16, 12)
    out = head.fuse(clip[:1], const, text)
    torch.testing.assert_close(out, out[..., :1, :1].expand_as(out))
    # matching grids are not resized and not logged
    GPUAHead(head.alignment_path).fuse(clip, tokens[:, :14, :14], text)
    assert len(messages) == 1


def test_dtype_device_follow_inputs(tmp_path):
    head = GPUAHead(_artifact(tmp_path, _orthogonal(12, 8)), fusion_weight=0.5)
    assert head.state_dict() == {}            # W is not a checkpoint parameter
    assert not list(head.parameters())
    clip, tokens, text = _inputs()
    out = head.fuse(clip.double(), tokens.bfloat16(), text.half())
    assert out.dtype == torch.float64
    assert head.gpua_logits(tokens.bfloat16(), text).dtype == torch.bfloat16
    head.to(torch.float64)
    assert head.W.dtype == torch.float64


def test_csls_matches_definition(tmp_path):
    # W = identity: the mapped tokens are the normalised tokens themselves
    head = GPUAHead(_artifact(tmp_path, torch.eye(5)), similarity='csls', csls_k=2)
    gen = torch.Generator().manual_seed(3)
    u = F.normalize(torch.randn(2, 2, 3, 5, generator=gen), dim=-1)
    t = F.normalize(torch.randn(4, 5, generator=gen), dim=-1)
    got = head.gpua_logits(u, t).permute(0, 2, 3, 1).reshape(2, 6, 4)
    cos = u.reshape(2, 6, 5) @ t.T
    # k = 2 against an explicit per-element loop; r_S over the tokens of the same crop only
    for b in range(2):
        for n in range(6):
            for q in range(4):
                r_t = sorted(cos[b, n].tolist(), reverse=True)[:2]
                r_s = sorted(cos[b, :, q].tolist(), reverse=True)[:2]
                want = 2 * cos[b, n, q] - sum(r_t) / 2 - sum(r_s) / 2
                assert abs(float(got[b, n, q]) - float(want)) < 1e-5
    # k covering everything: the neighbourhood means become plain means
    full = GPUAHead(head.alignment_path, similarity='csls', csls_k=100).gpua_logits(u, t)
    full = full.permute(0, 2, 3, 1).reshape(2, 6, 4)
    torch.testing.assert_close(full, 2 * cos - cos.mean(-1, keepdim=True)
                               - cos.mean(1, keepdim=True), rtol=1e-5, atol=1e-5)


def test_csls_head_mode(tmp_path):
    path = _artifact(tmp_path, _orthogonal(12, 8))
    _, tokens, text = _inputs()
    cos = GPUAHead(path).gpua_logits(tokens, text)
    csls = GPUAHead(path, similarity='csls', csls_k=3).gpua_logits(tokens, text)
    assert csls.shape == cos.shape and not torch.allclose(csls, cos)
    # per crop: adding another crop to the batch must not change the first crop's scores
    single = GPUAHead(path, similarity='csls', csls_k=3).gpua_logits(tokens[:1], text)
    torch.testing.assert_close(csls[:1], single)


def test_missing_artifact_prints_fit_command(tmp_path):
    missing = tmp_path / 'none.safetensors'
    with pytest.raises(FileNotFoundError) as info:
        GPUAHead(str(missing))
    assert f'python tools/fit_alignment.py CONFIG --out {missing}' in str(info.value)
    with pytest.raises(FileNotFoundError) as info:
        GPUAHead(str(missing), config_path='configs/gpua/x.py')
    assert f'python tools/fit_alignment.py configs/gpua/x.py --out {missing}' in str(info.value)


def test_validate_reports_each_mismatch(tmp_path):
    head = GPUAHead(_artifact(tmp_path, _orthogonal(12, 8)))
    head.validate(12, 8, VOCAB, identity=dict(vfm=VFM, vlm=VLM))     # matching: no error
    head.validate()                                                  # nothing to check
    cases = [
        (dict(identity=dict(vfm='vit_base_patch14_reg4_dinov2')), 'vfm'),
        (dict(identity=dict(vlm='ViT-L-14')), 'vlm'),
        (dict(dv=768), 'VFM dim'),
        (dict(dc=512), 'CLIP dim'),
        (dict(vocabulary=VOCAB + ['bird']), 'vocab_hash'),
        (dict(vocabulary=VOCAB[::-1]), 'vocab_hash'),
    ]
    for kwargs, needle in cases:
        with pytest.raises(ValueError) as info:
            head.validate(**kwargs)
        msg = str(info.value)
        assert needle in msg and 'tools/fit_alignment.py' in msg and head.alignment_path in msg
    with pytest.raises(ValueError) as info:
        head.validate(identity=dict(vfm='x', vlm='y'), config_path='cfg.py')
    assert 'vfm' in str(info.value) and 'vlm' in str(info.value)
    assert 'tools/fit_alignment.py cfg.py --out' in str(info.value)


def test_expected_checked_at_build_and_registry(tmp_path):
    path = _artifact(tmp_path, _orthogonal(12, 8))
    head = MODELS.build(dict(type='GPUAHead', alignment_path=path, fusion_weight=0.8,
                             expected=dict(vfm=VFM, vlm=VLM, dv=12, dc=8, vocabulary=VOCAB)))
    assert isinstance(head, GPUAHead) and head.fusion_weight == 0.8
    with pytest.raises(ValueError, match='vocab_hash'):
        GPUAHead(path, expected=dict(vocabulary=['cat']))
    with pytest.raises(ValueError, match='unknown keys'):
        GPUAHead(path, expected=dict(vocab=VOCAB))


def test_bad_arguments(tmp_path):
    path = _artifact(tmp_path, _orthogonal(12, 8))
    with pytest.raises(ValueError, match='fusion_weight'):
        GPUAHead(path, fusion_weight=1.5)
    with pytest.raises(ValueError, match='similarity'):
        GPUAHead(path, similarity='dot')
    head = GPUAHead(path)
    clip, tokens, text = _inputs()
    with pytest.raises(ValueError, match='dv=12'):
        head.gpua_logits(tokens[..., :5], text)
    with pytest.raises(ValueError, match='dc=8'):
        head.gpua_logits(tokens, text[:, :5])
    with pytest.raises(ValueError, match='one row per query'):
        head.fuse(clip, tokens, text[:2])
    with pytest.raises(ValueError, match='same batch size'):
        head.fuse(clip[:1], tokens, text)


def test_centring_and_fit_time_csls_radii_from_artifact(tmp_path):
    dv, dc = 12, 8
    w = _orthogonal(dv, dc)
    mu_v = torch.randn(dv)
    csls_r = torch.rand(len(VOCAB))
    path = _artifact(tmp_path, w, mu_v=mu_v, csls_r=csls_r)
    _, tokens, text = _inputs(dv=dv, dc=dc)
    head = GPUAHead(path)
    got = head.gpua_logits(tokens, text)
    plain = GPUAHead(_artifact(tmp_path, w, name='plain.safetensors')).gpua_logits(tokens, text)
    assert not torch.allclose(got, plain)
    # centring is applied before normalisation: shifting the tokens by mu_v undoes it
    torch.testing.assert_close(head.gpua_logits(tokens + mu_v, text),
                               GPUAHead(_artifact(tmp_path, w, name='p2.safetensors'))
                               .gpua_logits(tokens, text), rtol=1e-5, atol=1e-5)
    amap = AlignmentMap.load(path)
    torch.testing.assert_close(got, amap.logits(tokens, text).permute(0, 3, 1, 2),
                               rtol=1e-5, atol=1e-5)
    # CSLS uses the stored prototype radii, so each crop's scores match the artifact's own CSLS
    csls = GPUAHead(path, similarity='csls', csls_k=2).gpua_logits(tokens, text)
    for b in range(tokens.shape[0]):
        ref = amap.logits(tokens[b], text, similarity='csls', csls_k=2).permute(2, 0, 1)
        torch.testing.assert_close(csls[b], ref, rtol=1e-5, atol=1e-5)
    # a different vocabulary size cannot use the stored radii: per-crop estimate instead
    per_crop = GPUAHead(path, similarity='csls', csls_k=2).gpua_logits(tokens, text[:3])
    assert per_crop.shape[1] == 3


def test_vocabulary_checked_by_hash_when_names_absent(tmp_path):
    synonyms = [['background', 'sky'], ['cat'], ['person', 'person in shirt']]
    head = GPUAHead(_artifact(tmp_path, _orthogonal(12, 8), vocab=synonyms, store_names=False))
    head.validate(vocabulary=synonyms)
    with pytest.raises(ValueError, match='vocab_hash'):
        head.validate(vocabulary=synonyms[:2])


def test_with_tiny_dinov2_encoder_on_clip_grid(tmp_path):
    from gpua_mmseg.models.vfm import build_vfm_encoder
    torch.manual_seed(0)
    enc = build_vfm_encoder(dict(name='vit_base_patch14_reg4_dinov2', pretrained=False,
                                 model_kwargs=dict(embed_dim=32, depth=1, num_heads=2,
                                                   img_size=56)))
    head = GPUAHead(_artifact(tmp_path, _orthogonal(32, 16)), fusion_weight=0.5)
    head.validate(dv=enc.embed_dim, dc=16)
    crops01 = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        tokens = enc.patch_features(enc.normalize(crops01))
        clip = torch.randn(2, len(VOCAB), 14, 14)          # CLIP B/16 grid of the same crops
        out = head.fuse(clip, tokens, torch.randn(len(VOCAB), 16))
    assert tokens.shape == (2, 16, 16, 32) and out.shape == clip.shape
    assert torch.isfinite(out).all()
