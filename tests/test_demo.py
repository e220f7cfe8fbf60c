"""tools/demo.py end to end with tiny random models (offline, in-process where possible)."""
import importlib.util
import os
import os.path as osp
import subprocess
import sys
import time

import numpy as np
import pytest
import skimage.data
from PIL import Image

from gpua_mmseg.apis import label_map_image, resolve_config

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO = osp.join(REPO, 'tools', 'demo.py')
TINY_MODEL = """
model = dict(
    clip=dict(name='tiny', pretrained=None, model_cfg=dict(
        embed_dim=32, quick_gelu=True,
        vision_cfg=dict(image_size=32, patch_size=16, width=64, layers=2, head_width=16),
        text_cfg=dict(context_length=16, vocab_size=49408, width=32, heads=2, layers=1))),
    templates=['a photo of a {}.', 'a {}.'],
    slide_crop=64, slide_stride=32{extra})
test_pipeline = [dict(type='Resize', scale=(512, 64), keep_ratio=True)]
"""
TINY_GPUA = """,
    vfm=dict(_delete_=True, name='vit_base_patch16_dinov3.lvd1689m', pretrained=True,
             model_kwargs=dict(embed_dim=32, depth=1, num_heads=2, img_size=64)),
    decode_head=dict(_delete_=True, type='GPUAHead', alignment_path='{art}', fusion_weight=0.5)"""


@pytest.fixture(scope='module')
def demo():
    spec = importlib.util.spec_from_file_location('gpua_demo_tool', DEMO)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _config(path, extra=''):
    base = resolve_config('sclip')
    path.write_text(f"_base_ = '{base}'\n" + TINY_MODEL.replace('{extra}', extra))
    return str(path)


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp('imgs')
    names = ('chelsea', 'coffee', 'rocket', 'astronaut', 'immunohistochemistry')
    rng = np.random.default_rng(0)
    for i in range(20):
        img = getattr(skimage.data, names[i % len(names)])()
        y, x = rng.integers(0, 100, 2)
        Image.fromarray(img[y:y + 160 + i, x:x + 200]).save(d / f'img{i:02d}.png')
    return d


def test_folder_of_20_encodes_text_once(demo, folder, tmp_path, monkeypatch, capsys):
    from gpua_mmseg.models.clip import CLIPEncoder
    calls = []
    orig = CLIPEncoder.encode_text

    def counting(self, tokens):
        calls.append(tokens.shape[0])
        return orig(self, tokens)
    monkeypatch.setattr(CLIPEncoder, 'encode_text', counting)
    out = tmp_path / 'out'
    rc = demo.main([str(folder), '--classes', 'cat, kitty; sofa; person, man, woman',
                    '--config', _config(tmp_path / 'tiny.py'), '--out', str(out),
                    '--weights', 'random', '--device', 'cpu'])
    assert rc == 0
    assert calls == [6 * 2]  # one batch: 6 queries x 2 templates, for all 20 images
    text = capsys.readouterr()
    assert 'MEANINGLESS' in text.out and 'MEANINGLESS' in text.err
    rate = [ln for ln in text.out.splitlines() if 'images/s' in ln]
    assert rate and rate[-1].startswith('20 images in ')
    files = sorted(os.listdir(out))
    assert len(files) == 40 and not any(f.endswith('.tmp') for f in files)
    for i in (0, 19):
        src = Image.open(folder / f'img{i:02d}.png')
        lab = Image.open(out / f'img{i:02d}_labels.png')
        ov = Image.open(out / f'img{i:02d}_overlay.png')
        assert lab.format == 'PNG' and lab.mode == 'L' and lab.size == src.size
        assert np.asarray(lab).max() < 3
        assert ov.format == 'PNG' and ov.size[0] > src.size[0] and ov.size[1] >= src.size[1]


def test_samples_default_vocabulary(demo, tmp_path, capsys, monkeypatch):
    assert {'astronaut', 'chelsea', 'coffee', 'rocket'} <= set(demo.SAMPLES)
    monkeypatch.setattr(demo, 'SAMPLES', ('chelsea', 'camera'))  # colour + grey, for speed
    rc = demo.main(['--config', _config(tmp_path / 'tiny.py'), '--out', str(tmp_path / 's'),
                    '--weights', 'random'])
    assert rc == 0
    for name in demo.SAMPLES:
        assert (tmp_path / 's' / f'{name}_overlay.png').is_file()
    assert f'{len(demo.SAMPLES)} images in' in capsys.readouterr().out


def test_gpua_fit_then_reuse(demo, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('GPUA_MMSEG_CACHE', str(tmp_path / 'cache'))
    cfg = _config(tmp_path / 'tiny_gpua.py',
                  TINY_GPUA.replace('{art}', str(tmp_path / 'missing.safetensors')))
    imgs = tmp_path / 'imgs'
    imgs.mkdir()
    for name in ('chelsea', 'coffee'):
        Image.fromarray(getattr(skimage.data, name)()[:200, :240]).save(imgs / f'{name}.png')
    args = [str(imgs), '--classes', 'cat; cup; rocket; background', '--config', cfg,
            '--out', str(tmp_path / 'o'), '--weights', 'random', '--fit-options',
            'refine_steps=10', '--fit']
    assert demo.main(args) == 0
    arts = os.listdir(tmp_path / 'cache' / 'alignments')
    assert len(arts) == 1 and arts[0].startswith('tiny_gpua_')
    assert 'fitting a GPUA map on 2 images' in capsys.readouterr().out
    from gpua_mmseg.alignment import AlignmentMap
    amap = AlignmentMap.load(str(tmp_path / 'cache' / 'alignments' / arts[0]))
    assert amap.meta['vocabulary'] == [['cat'], ['cup'], ['rocket'], ['background']]
    assert amap.orthogonality_error() < 1e-4
    assert demo.main(args) == 0  # second run: the cached fit is reused
    assert 'fitted earlier' in capsys.readouterr().out
    # without --fit, a missing artifact is a clear error
    assert demo.main(args[:-1]) == 2
    assert '--fit' in capsys.readouterr().err
    assert demo.main(args[:-1] + ['--classes', 'cat;;dog']) == 2
    assert 'empty' in capsys.readouterr().err


def test_offline_real_weights_fail_fast(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE='1', GPUA_MMSEG_CACHE=str(tmp_path / 'empty'),
               HF_HOME=str(tmp_path / 'hf'), HF_HUB_CACHE=str(tmp_path / 'hf' / 'hub'))
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, DEMO, '--samples', '--config', 'sclip', '--out',
                          str(tmp_path / 'o')], capture_output=True, text=True, env=env,
                         timeout=60)
    dt = time.perf_counter() - t0
    assert out.returncode == 2, out.stderr
    assert dt < 10, f'took {dt:.1f} s'
    assert 'HF_HUB_OFFLINE is set' in out.stderr and 'ViT-B-16.pt' in out.stderr
    assert 'GPUA_MMSEG_CACHE' in out.stderr and '--clip-weights' in out.stderr
    assert not (tmp_path / 'o').exists()


def test_label_png_16bit_roundtrip(tmp_path):
    from gpua_mmseg.apis import atomic_save
    lab = np.arange(300 * 4).reshape(40, 30) % 300
    path = atomic_save(label_map_image(lab, 300), str(tmp_path / 'l.png'))
    back = np.asarray(Image.open(path))
    np.testing.assert_array_equal(back.astype(np.int64), lab)
    small = label_map_image(lab % 200, 200)
    assert small.mode == 'L'
