"""ProxyCLIP parity: our patch logits against the *public ProxyCLIP code's* stored numbers.

tests/data/proxyclip_regression.safetensors holds seeded fp16-rounded tiny weights (open_clip ViT
with QuickGELU; timm DINOv3 and DINOv2), two uint8 images (224x224, and 224x336 non-square) and
random unit text embeddings, with the logits that github.com/mc-lan/ProxyCLIP's own code
computed from them (procedure: tests/data/proxyclip_regression_make.py).  The same procedure at
ViT-B/16 + DINOv3 ViT-B/16 / DINOv2 ViT-B/14 sizes is recorded in
proxyclip_regression_peer_diffs.json.
"""
import json
import os.path as osp

import pytest
import torch
from safetensors.torch import load_file

from gpua_mmseg.models.backbone import query_logits
from gpua_mmseg.models.clip import build_clip_encoder, tiny_clip_model_cfg
from gpua_mmseg.models.vfm import VFMEncoder

DATA = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'data')
CLIP_CFG = tiny_clip_model_cfg(image_size=224, patch_size=16, width=64, layers=3, heads=4,
                               embed_dim=32, text_width=32, text_layers=1, text_heads=2,
                               context_length=16)
VFMS = {'dinov3': 'vit_base_patch16_dinov3.lvd1689m', 'dinov2': 'vit_base_patch14_reg4_dinov2'}


@pytest.fixture(scope='module')
def stored():
    return load_file(osp.join(DATA, 'proxyclip_regression.safetensors'))


def _models(stored, key):
    clip = build_clip_encoder(dict(name='tiny-proxyclip', model_cfg=CLIP_CFG), 'proxyclip',
                              dict(beta=1.2, gamma=3.0))
    vfm = VFMEncoder(VFMS[key], pretrained=False,
                     model_kwargs=dict(embed_dim=32, depth=2, num_heads=2))
    pre = f'tiny_{key}.'
    clip.model.visual.load_state_dict({k[len(pre) + 5:]: v for k, v in stored.items()
                                       if k.startswith(pre + 'clip.')})
    vfm.model.load_state_dict({k[len(pre) + 4:]: v for k, v in stored.items()
                               if k.startswith(pre + 'vfm.')})
    return clip.eval(), vfm.eval()


@pytest.mark.parametrize('key', sorted(VFMS))
@pytest.mark.parametrize('tag', ['sq', 'nonsq'])
def test_proxyclip_logits_match_public_code(stored, key, tag):
    clip, vfm = _models(stored, key)
    x = stored[f'image.{tag}'][None].float() / 255
    with torch.no_grad():
        tokens = vfm.patch_features(vfm.normalize(x))
        logits = query_logits(clip.patch_features(clip.normalize(x), vfm_tokens=tokens),
                              stored[f'tiny_{key}.text'])[0]
    ref = stored[f'tiny_{key}.ref.{tag}']
    assert logits.shape == ref.shape      # on the VFM grid (DINOv2: 16x24 for 224x336)
    torch.testing.assert_close(logits, ref, rtol=0, atol=1e-4)
    # not a vacuous tolerance: the proxy attention moves the logits far more than 1e-4
    plain = build_clip_encoder(dict(name='tiny-proxyclip', model_cfg=CLIP_CFG), 'maskclip')
    plain.model.visual.load_state_dict(clip.model.visual.state_dict())
    with torch.no_grad():
        other = query_logits(plain.patch_features(plain.normalize(x)), stored[f'tiny_{key}.text'])
    other = torch.nn.functional.interpolate(other, size=ref.shape[-2:], mode='bilinear')[0]
    assert (other - ref).abs().max() > 1e-2


def test_full_size_parity_recorded():
    with open(osp.join(DATA, 'proxyclip_regression_peer_diffs.json')) as f:
        rec = json.load(f)['results']
    assert {k for k in rec if k.startswith('full_')} == {
        f'full_{v}:{t}' for v in VFMS for t in ('sq', 'nonsq')}
    assert all(r['max_abs_diff'] < 1e-4 for r in rec.values())


def test_proxyclip_needs_vfm_tokens():
    clip = build_clip_encoder(dict(name='tiny-proxyclip', model_cfg=CLIP_CFG), 'proxyclip')
    assert clip.needs_vfm
    with pytest.raises(ValueError, match='vfm_tokens'):
        clip.patch_features(torch.zeros(1, 3, 32, 32))
