"""demo --fit segments the fitted images from the features the fit extracted: same labels as a
fresh forward, and no second pass through the encoders (tiny random models, offline)."""
import importlib.util
import os
import os.path as osp

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from gpua_mmseg.apis import resolve_config

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO = osp.join(REPO, 'tools', 'demo.py')
TINY = """_base_ = '{base}'
model = dict(
    clip=dict(name='tiny', pretrained=None, model_cfg=dict(
        embed_dim=32, quick_gelu=True,
        vision_cfg=dict(image_size=32, patch_size=16, width=64, layers=2, head_width=16),
        text_cfg=dict(context_length=16, vocab_size=49408, width=32, heads=2, layers=1))),
    templates=['a photo of a {{}}.'], slide_crop=64, slide_stride=32, crop_batch_size=2,
    vfm=dict(_delete_=True, name='vit_base_patch16_dinov3.lvd1689m', pretrained=True,
             model_kwargs=dict(embed_dim=32, depth=1, num_heads=2, img_size=64)),
    decode_head=dict(_delete_=True, type='GPUAHead', alignment_path='{art}', fusion_weight=0.5)
    {extra})
test_pipeline = [dict(type='Resize', scale=(512, 64), keep_ratio=True)]
"""
CLASSES = 'cat; cup; rocket; background'


def _config(tmp_path, base='sclip', extra=''):
    path = tmp_path / f'tiny_gpua_{base}.py'
    path.write_text(TINY.format(base=resolve_config(base), art=tmp_path / 'missing.safetensors',
                                extra=extra))
    return str(path)


def _images(folder):
    folder.mkdir()
    for name, crop in (('chelsea', (slice(0, 150), slice(0, 230))),
                       ('coffee', (slice(20, 200), slice(0, 200)))):
        Image.fromarray(getattr(skimage.data, name)()[crop]).save(folder / f'{name}.png')
    return sorted(str(folder / f) for f in os.listdir(folder))


class _EncoderCalls:
    """Counts CLIP and VFM patch_features calls (the two encoders' forwards)."""

    def __init__(self, monkeypatch):
        from gpua_mmseg.models.clip.encoder import CLIPEncoder
        from gpua_mmseg.models.vfm import VFMEncoder
        self.n = 0
        for cls in (CLIPEncoder, VFMEncoder):
            orig = cls.patch_features

            def wrapped(self_, *a, _orig=orig, **k):
                self.n += 1
                return _orig(self_, *a, **k)
            monkeypatch.setattr(cls, 'patch_features', wrapped)


@pytest.mark.parametrize('base, extra', [('sclip', ''), ('sclip', ", vfm_window='whole'"),
                                         ('proxyclip', '')])
def test_segment_from_fit_features_equals_fresh_forward(tmp_path, monkeypatch, base, extra):
    from gpua_mmseg.apis import OpenVocabSegmenter
    from gpua_mmseg.apis.fit import fit_alignment_on_images
    monkeypatch.setenv('GPUA_MMSEG_CACHE', str(tmp_path / 'cache'))
    paths = _images(tmp_path / 'imgs')
    seg = OpenVocabSegmenter(_config(tmp_path, base, extra), classes=CLASSES, weights='random',
                             device='cpu', require_alignment=False)
    kept = []
    fit_alignment_on_images(seg, paths, config=dict(refine_steps=5), keep_features=kept)
    assert len(kept) == len(paths) and all(k is not None for k in kept)
    calls = _EncoderCalls(monkeypatch)
    reused = [seg(p, features=f) for p, f in zip(paths, kept)]
    assert calls.n == 0                      # no encoder ran
    fresh = [seg(p) for p in paths]
    assert calls.n > 0
    for r, f in zip(reused, fresh):
        np.testing.assert_array_equal(r.labels, f.labels)
        np.testing.assert_allclose(r.scores, f.scores, rtol=0, atol=1e-6)
    # the features of another image do not fit this one's window: a clear error
    with pytest.raises(ValueError, match='crop batch'):
        seg(paths[0], features=kept[1])


def test_demo_fit_segments_without_a_second_encoder_pass(tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location('gpua_demo_tool_reuse', DEMO)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    monkeypatch.setenv('GPUA_MMSEG_CACHE', str(tmp_path / 'cache'))
    _images(tmp_path / 'imgs')
    args = [str(tmp_path / 'imgs'), '--classes', CLASSES, '--config', _config(tmp_path),
            '--weights', 'random', '--fit-options', 'refine_steps=5', '--fit']
    calls = _EncoderCalls(monkeypatch)
    assert demo.main(args + ['--out', str(tmp_path / 'fit')]) == 0      # fit, then segment
    assert 'fitting a GPUA map on 2 images' in capsys.readouterr().out
    n_fit_run = calls.n
    calls.n = 0
    assert demo.main(args + ['--out', str(tmp_path / 'cached')]) == 0   # cached map: fresh
    assert 'fitted earlier' in capsys.readouterr().out
    # the fitting run's encoder passes are the fit's extraction alone (one pass per image)
    assert calls.n > 0 and n_fit_run == calls.n, (n_fit_run, calls.n)
    for name in ('chelsea', 'coffee'):
        a = np.asarray(Image.open(tmp_path / 'fit' / f'{name}_labels.png'))
        b = np.asarray(Image.open(tmp_path / 'cached' / f'{name}_labels.png'))
        np.testing.assert_array_equal(a, b)
