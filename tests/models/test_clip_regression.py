"""Stored outputs of every last-block variant (tiny model, non-square non-native grid, batch 2).

The expected numbers were produced by this implementation after it matched the public SCLIP,
NACLIP, ClearCLIP and SC-CLIP code at ViT-B/16 224² (see clip_regression_peer_diffs.json).
"""
import json
import os.path as osp

import pytest
import torch
from safetensors.torch import load_file

from gpua_mmseg.models.clip import build_clip_encoder, list_last_blocks, tiny_clip_model_cfg

DATA = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'data')
MODEL_CFG = tiny_clip_model_cfg(image_size=64, patch_size=8, width=32, layers=5, heads=2,
                                embed_dim=16, text_width=32, text_layers=1, text_heads=2)
MODE_CFGS = dict(vanilla={}, maskclip={}, sclip={}, clearclip={}, naclip=dict(gaussian_std=2.0),
                 scclip=dict(pre_adjust_idx=2, post_adjust_idx=1, multi_start_idx=1,
                             multi_end_idx=3, lof_k=10))


@pytest.fixture(scope='module')
def stored():
    return load_file(osp.join(DATA, 'clip_regression.safetensors'))


def test_every_variant_is_covered():
    # proxyclip (needs VFM tokens) has its own parity file: test_proxyclip_regression.py
    assert sorted(set(MODE_CFGS) | {'proxyclip'}) == list_last_blocks()


@pytest.mark.parametrize('mode', sorted(MODE_CFGS))
def test_variant_matches_stored_output(stored, mode):
    enc = build_clip_encoder(dict(name='tiny-regression', model_cfg=MODEL_CFG), mode,
                             MODE_CFGS[mode])
    visual = {k[len('visual.'):]: v for k, v in stored.items() if k.startswith('visual.')}
    enc.model.visual.load_state_dict(visual)
    with torch.no_grad():
        out = enc.patch_features(stored['images'])
    torch.testing.assert_close(out, stored[f'out.{mode}'], rtol=0, atol=1e-5)


def test_peer_diffs_recorded_and_small():
    with open(osp.join(DATA, 'clip_regression_peer_diffs.json')) as f:
        rec = json.load(f)
    modes = {k.split(':')[1] for k in rec['results']}
    assert modes == set(list_last_blocks()) - {'proxyclip'}
    assert all(v['max_abs_diff'] < 1e-5 for v in rec['results'].values())
