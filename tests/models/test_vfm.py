"""VFMEncoder: timm DINOv3 / DINOv2 wrapper (tiny random models, no network)."""
import os

import pytest
import torch
from safetensors.torch import save_file

import gpua_mmseg.models  # noqa: F401  (mmcv placeholder before anything mm*)
from gpua_mmseg.models.vfm import VFMEncoder, build_vfm_encoder

DINOV3 = 'vit_base_patch16_dinov3.lvd1689m'
DINOV3_QKVB = 'vit_base_patch16_dinov3_qkvb.lvd1689m'
DINOV2 = 'vit_base_patch14_reg4_dinov2'
TINY = dict(embed_dim=64, depth=2, num_heads=4, img_size=64)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _tiny(name=DINOV3, seed=0, **overrides):
    torch.manual_seed(seed)
    return build_vfm_encoder(dict(name=name, pretrained=False, model_kwargs=dict(TINY, **overrides)))


def _to_meta_dinov3_layout(state_dict, head_dim):
    """Invert timm's DINOv3 checkpoint filter: timm key layout -> Meta's original layout.

    Meta's DinoVisionTransformer stores registers as ``storage_tokens``, layer scale as
    ``ls{1,2}.gamma``, a full ``qkv.bias`` (k part zero) with a ``bias_mask`` buffer, plus the
    pre-training ``mask_token`` and the RoPE ``periods`` buffer.
    """
    out = {}
    dim = state_dict['cls_token'].shape[-1]
    for key, value in state_dict.items():
        if key.endswith('attn.q_bias') or key.endswith('attn.v_bias'):
            continue
        key = key.replace('reg_token', 'storage_tokens')
        key = key.replace('gamma_1', 'ls1.gamma').replace('gamma_2', 'ls2.gamma')
        out[key] = value.clone()
        if key.endswith('attn.qkv.weight'):
            block = key[:-len('qkv.weight')]
            q_bias = state_dict.get(block + 'q_bias', torch.zeros(dim))
            v_bias = state_dict.get(block + 'v_bias', torch.zeros(dim))
            out[block + 'qkv.bias'] = torch.cat([q_bias, torch.zeros(dim), v_bias]).clone()
            out[block + 'qkv.bias_mask'] = torch.cat(
                [torch.ones(dim), torch.zeros(dim), torch.ones(dim)])
    out['mask_token'] = torch.zeros(1, dim)
    out['rope_embed.periods'] = torch.rand(head_dim // 4)
    return out


def test_interface_and_imagenet_stats():
    enc = _tiny()
    assert (enc.patch_size, enc.embed_dim, enc.num_prefix_tokens) == (16, 64, 5)
    assert torch.allclose(enc.mean, torch.tensor(IMAGENET_MEAN))
    assert torch.allclose(enc.std, torch.tensor(IMAGENET_STD))
    img = torch.rand(2, 3, 32, 48, dtype=torch.float64)
    out = enc.normalize(img)
    assert out.dtype == torch.float64
    expected = (img[:, 1] - 0.456) / 0.224
    assert torch.allclose(out[:, 1], expected)
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.model.training


def test_prefix_tokens_dropped_matches_manual_slice_non_square():
    enc = _tiny()
    x = torch.randn(2, 3, 48, 80)
    feats = enc.patch_features(x)
    assert feats.shape == (2, 3, 5, 64)
    with torch.no_grad():
        full = enc.model.forward_features(x)
    assert full.shape[1] == 5 + 15  # 1 CLS + 4 registers + 3x5 patches
    manual = full[:, 5:].reshape(2, 3, 5, 64)
    torch.testing.assert_close(feats, manual, rtol=0, atol=0)
    # the CLS / register tokens are not in the output
    assert not torch.allclose(feats.reshape(2, 15, 64)[:, :5], full[:, :5])


def test_prefix_count_follows_the_model():
    enc = _tiny(num_reg_tokens=2)
    assert enc.num_prefix_tokens == 3
    x = torch.randn(1, 3, 32, 64)
    with torch.no_grad():
        full = enc.model.forward_features(x)
    torch.testing.assert_close(enc.patch_features(x), full[:, 3:].reshape(1, 2, 4, 64))


def test_grid_layout_is_row_major():
    # with no transformer blocks every output token is norm(conv(its own patch)), so the grid
    # position of each token can be checked against the pixels it came from
    enc = _tiny(depth=0)
    x = torch.randn(1, 3, 32, 48)
    feats = enc.patch_features(x)
    p = 16
    for i in range(2):
        for j in range(3):
            patch = x[:, :, i * p:(i + 1) * p, j * p:(j + 1) * p]
            tok = enc.model.patch_embed.proj(patch).flatten(1)
            tok = enc.model.norm(tok)
            torch.testing.assert_close(feats[0, i, j], tok[0], rtol=1e-5, atol=1e-5)


def test_dinov2_patch14_grid():
    enc = _tiny(DINOV2, img_size=56)
    assert enc.patch_size == 14 and enc.num_prefix_tokens == 5
    assert torch.allclose(enc.mean, torch.tensor(IMAGENET_MEAN))
    feats = enc.patch_features(torch.randn(2, 3, 42, 70))
    assert feats.shape == (2, 3, 5, 64)
    # 224 crops give a 16x16 grid with patch 14 (vs 14x14 for patch 16)
    assert enc.grid_size(224, 224) == (16, 16)


def test_dtype_follows_parameters():
    enc = _tiny().to(torch.bfloat16)
    feats = enc.patch_features(torch.randn(1, 3, 32, 32))
    assert feats.dtype == torch.bfloat16 and feats.shape == (1, 2, 2, 64)


@pytest.mark.parametrize('name', [DINOV3, DINOV3_QKVB])
@pytest.mark.parametrize('layout,suffix', [('timm', '.safetensors'), ('meta', '.pth')])
def test_load_local_checkpoint_both_layouts(tmp_path, name, layout, suffix):
    src = _tiny(name, seed=1)
    with torch.no_grad():  # non-trivial values for parameters initialised to 0 / 1e-5
        for param in src.model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    state = {k: v.contiguous() for k, v in src.model.state_dict().items()}
    if layout == 'meta':
        state = _to_meta_dinov3_layout(state, head_dim=TINY['embed_dim'] // TINY['num_heads'])
        assert 'storage_tokens' in state and not any('gamma_1' in k for k in state)
    path = tmp_path / f'dino{suffix}'
    if suffix == '.safetensors':
        save_file(state, str(path))
    else:
        torch.save(state, str(path))

    loaded = build_vfm_encoder(dict(name=name, pretrained=str(path), model_kwargs=TINY))
    assert loaded.checkpoint == os.path.abspath(path)
    fresh = _tiny(name, seed=2)
    for key, value in src.model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[key], value, rtol=0, atol=0)
    x = torch.randn(1, 3, 32, 48)
    torch.testing.assert_close(loaded.patch_features(x), src.patch_features(x))
    assert not torch.allclose(fresh.patch_features(x), src.patch_features(x))
    assert len(loaded.checkpoint_sha256()) == 64


def test_missing_checkpoint_names_file_and_model(tmp_path):
    missing = tmp_path / 'nope.pth'
    with pytest.raises(FileNotFoundError) as info:
        build_vfm_encoder(dict(name=DINOV3, pretrained=str(missing), model_kwargs=TINY))
    assert str(missing) in str(info.value) and DINOV3 in str(info.value)


def test_mismatched_checkpoint_names_file_and_model(tmp_path):
    other = _tiny(depth=3, embed_dim=32, num_heads=2)
    path = tmp_path / 'wrong.safetensors'
    save_file({k: v.contiguous() for k, v in other.model.state_dict().items()}, str(path))
    with pytest.raises(ValueError) as info:
        build_vfm_encoder(dict(name=DINOV3, pretrained=str(path), model_kwargs=TINY))
    assert str(path) in str(info.value) and DINOV3 in str(info.value)


def test_bad_configs():
    with pytest.raises(ValueError, match='unknown vfm config keys'):
        build_vfm_encoder(dict(name=DINOV3, pretrained=False, img_size=64))
    with pytest.raises(ValueError, match='unknown timm model'):
        build_vfm_encoder(dict(name='not_a_model_xyz', pretrained=False))
    with pytest.raises(ValueError, match='dynamic_img_size'):
        build_vfm_encoder(dict(name=DINOV3, pretrained=False,
                               model_kwargs=dict(TINY, dynamic_img_size=False)))
    with pytest.raises(ValueError, match='pretrained must be'):
        VFMEncoder(DINOV3, pretrained=3, model_kwargs=TINY)
    enc = _tiny()
    with pytest.raises(ValueError, match=r'\[B, 3, H, W\]'):
        enc.patch_features(torch.randn(3, 32, 32))
    assert build_vfm_encoder(enc) is enc


@pytest.mark.parametrize('name, size, grid', [(DINOV3, (8, 32), (1, 2)), (DINOV3, (20, 30), (1, 2)),
                                              (DINOV2, (1, 1), (1, 1)), (DINOV2, (42, 75), (3, 5))])
def test_any_size_is_resized_to_whole_patches(name, size, grid):
    # the token grid spans the whole input: H / p rounded (at least 1), the input resized to it
    enc = _tiny(name, img_size=56)
    p = enc.patch_size
    x = torch.randn(1, 3, *size)
    feats = enc.patch_features(x)
    assert feats.shape[1:3] == grid == enc.grid_size(*size)
    resized = torch.nn.functional.interpolate(x, size=(grid[0] * p, grid[1] * p),
                                              mode='bilinear', align_corners=False)
    torch.testing.assert_close(feats, enc.patch_features(resized))


def test_pretrained_cfg_overlay_sets_the_input_statistics(tmp_path):
    # weights trained with other statistics (the toy world's VFM: pixels as they are) declare
    # them through timm's own pretrained_cfg overlay, with or without a local checkpoint
    stats = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    enc = build_vfm_encoder(dict(name=DINOV3, pretrained=False, model_kwargs=TINY,
                                 pretrained_cfg_overlay=stats))
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(enc.normalize(x), x)
    assert enc.describe()['mean'] == [0.0] * 3 and enc.describe()['std'] == [1.0] * 3
    path = str(tmp_path / 'w.safetensors')
    save_file({k: v.contiguous() for k, v in enc.model.state_dict().items()}, path)
    loaded = build_vfm_encoder(dict(name=DINOV3, pretrained=path, model_kwargs=TINY,
                                    pretrained_cfg_overlay=dict(mean=[0.5] * 3, std=[0.25] * 3)))
    assert torch.allclose(loaded.normalize(torch.full((1, 3, 2, 2), 0.75)), torch.ones(1, 3, 2, 2))
    assert torch.equal(loaded.model.patch_embed.proj.weight, enc.model.patch_embed.proj.weight)
    # without the overlay: the model's own (ImageNet) statistics
    assert torch.allclose(_tiny().mean, torch.tensor(IMAGENET_MEAN))


@pytest.mark.parametrize('overlay, needle', [
    (dict(std=(0.0, 1.0, 1.0)), 'pretrained_cfg_overlay.std must be 3 finite numbers > 0'),
    (dict(mean=(0.5, 0.5)), 'pretrained_cfg_overlay.mean must be 3 finite numbers'),
    (dict(file='/x.safetensors'), 'give the weights file as vfm.pretrained'),
    ([0.5, 0.5, 0.5], 'must be a dict'),
])
def test_bad_pretrained_cfg_overlay_is_named(overlay, needle):
    with pytest.raises(ValueError, match=needle.replace('.', r'\.')):
        build_vfm_encoder(dict(name=DINOV3, pretrained=False, model_kwargs=TINY,
                               pretrained_cfg_overlay=overlay))
