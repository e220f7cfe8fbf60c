"""Small helpers shared by test modules (importable because tests/ holds the root conftest)."""


def flatten_options(prefix, d):
    """Nested dict -> ``--cfg-options`` strings: ``prefix.key.sub=value``."""
    for k, v in d.items():
        if isinstance(v, dict):
            yield from flatten_options(f'{prefix}.{k}', v)
        else:
            yield f'{prefix}.{k}={v}'


# ------------------------------------------------------------ tiny random encoders and map
TINY_VOCAB = ['cat', 'dog', 'car', 'tree']
TINY_VFM_KW = dict(embed_dim=24, depth=2, num_heads=2, img_size=64)


def tiny_clip_model_cfg_default():
    from gpua_mmseg.models.clip import tiny_clip_model_cfg
    return tiny_clip_model_cfg(width=32, layers=2, heads=2, embed_dim=16, text_width=32,
                               text_layers=1, text_heads=2, context_length=16)


def tiny_clip_encoder(mode='sclip', seed=0):
    """A random tiny open_clip CLIP (width 32, 2 layers, embed 16) under ``mode``, eval."""
    import torch
    from gpua_mmseg.models.clip import build_clip_encoder
    torch.manual_seed(seed)
    return build_clip_encoder(dict(name='tiny', pretrained=None,
                                   model_cfg=tiny_clip_model_cfg_default()), mode=mode).eval()


def tiny_dinov3_encoder(seed=1, **model_kwargs):
    """A random tiny timm DINOv3 ViT (patch 16; ``TINY_VFM_KW`` unless overridden), eval."""
    import torch
    from gpua_mmseg.models.vfm import build_vfm_encoder
    torch.manual_seed(seed)
    return build_vfm_encoder(dict(name='vit_base_patch16_dinov3.lvd1689m', pretrained=False,
                                  model_kwargs=dict(TINY_VFM_KW, **model_kwargs))).eval()


def random_alignment(path, clip, vfm, vocab=TINY_VOCAB, mode='sclip'):
    """Write a random orthogonal GPUA map for ``clip`` / ``vfm`` / ``vocab`` to ``path``."""
    import torch
    from gpua_mmseg.alignment import AlignmentMap
    from gpua_mmseg.models.identity import artifact_identity
    g = torch.Generator().manual_seed(0)
    w = torch.linalg.qr(torch.randn(vfm.embed_dim, clip.embed_dim, generator=g,
                                    dtype=torch.float64))[0].float()
    ident = artifact_identity(clip, vfm, mode, 'query', list(vocab))
    AlignmentMap(w, dict(identity=ident, vfm=vfm.name, vlm='tiny', vocabulary=list(vocab),
                         vocab_hash=ident['vocab_hash'])).save(str(path))
    return str(path)
