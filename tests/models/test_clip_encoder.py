"""CLIPEncoder interface, vanilla parity with open_clip, positional-embedding interpolation."""
import pytest
import torch

from gpua_mmseg.models.clip import (build_clip_encoder, list_last_blocks, mode_needs_vfm,
                                    tiny_clip_model_cfg)

# SC-CLIP's ViT-B/16 layer indices do not exist in the 3-block tiny model.
TINY_CFG = dict(scclip=dict(pre_adjust_idx=1, post_adjust_idx=0, multi_start_idx=0,
                            multi_end_idx=2, lof_k=5))


def test_interface_shapes_and_stats(make_tiny_clip):
    enc = make_tiny_clip()
    assert enc.patch_size == 16 and enc.embed_dim == 32 and enc.width == 64
    assert enc.mean.shape == (3,) and enc.std.shape == (3,)
    img = torch.rand(2, 3, 64, 48)
    x = enc.normalize(img)
    torch.testing.assert_close(x[:, 0], (img[:, 0] - 0.48145466) / 0.26862954)
    f = enc.patch_features(x)
    assert f.shape == (2, 4, 3, 32)
    tok = enc.tokenize(['a photo of a cat.', 'dog'])
    assert tok.shape == (2, 77) and tok.dtype == torch.long
    assert enc.encode_text(tok).shape == (2, 32)


def test_vanilla_matches_open_clip_forward(make_tiny_clip):
    enc = make_tiny_clip('vanilla', seed=3)
    visual = enc.model.visual
    x = torch.randn(3, 3, 32, 32)
    visual.output_tokens = True
    try:
        _, tokens = visual(x)   # open_clip's own forward: ln_post applied, proj not
    finally:
        visual.output_tokens = False
    ref = (tokens @ visual.proj).reshape(3, 2, 2, -1)
    torch.testing.assert_close(enc.patch_features(x), ref, rtol=1e-5, atol=1e-5)


def test_vanilla_matches_open_clip_text(make_tiny_clip):
    enc = make_tiny_clip(seed=1)
    tok = enc.tokenize(['a', 'b c d'])
    torch.testing.assert_close(enc.encode_text(tok), enc.model.encode_text(tok))


def test_pos_embed_interpolation():
    torch.manual_seed(0)
    enc = build_clip_encoder(dict(name='t', model_cfg=tiny_clip_model_cfg(image_size=64)))
    pe = enc.model.visual.positional_embedding
    assert enc.pos_embed((4, 4)) is pe        # native grid: used as is
    out = enc.pos_embed((8, 6))
    assert out.shape == (49, 64)
    torch.testing.assert_close(out[0], pe[0])  # CLS position untouched
    # a constant field stays constant under bicubic resampling (weights sum to one)
    with torch.no_grad():
        pe[1:] = pe[1:2]
    out = enc.pos_embed((7, 5))
    torch.testing.assert_close(out[1:], pe[1:2].expand(35, -1), rtol=1e-5, atol=1e-5)


def _vfm_tokens(img, seed=0):
    """Stand-in VFM tokens on the image's 16-pixel grid (for variants that read them)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(img.shape[0], img.shape[-2] // 16, img.shape[-1] // 16, 8, generator=g)


def _features(enc, img, tokens):
    return enc.patch_features(img, vfm_tokens=tokens if mode_needs_vfm(enc.mode) else None)


def test_batch_independence_all_modes(make_tiny_clip):
    img = torch.randn(3, 3, 48, 64)
    tok = _vfm_tokens(img)
    for mode in list_last_blocks():
        enc = make_tiny_clip(mode, seed=2, **TINY_CFG.get(mode, {}))
        full = _features(enc, img, tok)
        single = torch.cat([_features(enc, img[i:i + 1], tok[i:i + 1]) for i in range(3)])
        torch.testing.assert_close(full, single, rtol=1e-4, atol=1e-5, msg=mode)


def test_modes_differ(make_tiny_clip):
    img = torch.randn(1, 3, 48, 48)
    tok = _vfm_tokens(img)
    outs = {m: _features(make_tiny_clip(m, seed=4, **TINY_CFG.get(m, {})), img, tok)
            for m in list_last_blocks()}
    names = sorted(outs)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not torch.allclose(outs[a], outs[b], atol=1e-4), (a, b)


def test_bad_inputs(make_tiny_clip, tiny_clip_cfg):
    enc = make_tiny_clip()
    with pytest.raises(ValueError, match='multiple of the CLIP patch size'):
        enc.patch_features(torch.randn(1, 3, 40, 32))
    with pytest.raises(ValueError, match=r'\[B, 3, H, W\]'):
        enc.patch_features(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match='known:.*sclip'):
        build_clip_encoder(tiny_clip_cfg, mode='nope')
    with pytest.raises(ValueError, match='gaussian_std'):
        build_clip_encoder(tiny_clip_cfg, mode='naclip', mode_cfg=dict(sigma=1))
    with pytest.raises(ValueError, match='unknown clip config keys'):
        build_clip_encoder(dict(tiny_clip_cfg, pretrain='openai'))
    with pytest.raises(ValueError, match='unknown open_clip model name'):
        build_clip_encoder(dict(name='ViT-Q-99'))
    with pytest.raises(ValueError, match='pre_adjust_idx=8 is out of range'):
        make_tiny_clip('scclip').patch_features(torch.randn(1, 3, 32, 32))


@pytest.mark.parametrize('dtype', [torch.float64, torch.bfloat16])
def test_dtype_follows_model(make_tiny_clip, dtype):
    enc = make_tiny_clip('sclip').to(dtype)
    out = enc.patch_features(torch.randn(1, 3, 32, 32))
    assert out.dtype == dtype
