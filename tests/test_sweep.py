"""tools/sweep.py: every (λ, prob_thd) setting scored from one encoding equals a plain
tools/test.py run at that setting; table, CSV and plot are written; bad input exits 2."""
import csv
import os.path as osp
import re
import runpy
import subprocess
import sys

import pytest
import torch

import gpua_mmseg.models  # noqa: F401  (mmcv-lite placeholder before mmseg)
from gpua_mmseg.alignment import AlignmentMap
from gpua_mmseg.datasets import load_class_names
from gpua_mmseg.models.clip import tiny_clip_model_cfg
from _helpers import flatten_options

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = 'configs/gpua/gpua_sclip_dinov3_vitb16_voc21.py'
VFM = 'vit_base_patch16_dinov3.lvd1689m'


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('sweep')
    r = subprocess.run([sys.executable, 'tools/make_toy_dataset.py', str(tmp / 'toy'), '--n',
                        '3', '--size', '64', '80'], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    g = torch.Generator().manual_seed(0)
    w = torch.linalg.qr(torch.randn(24, 16, generator=g, dtype=torch.float64))[0].float()
    art = str(tmp / 'align.safetensors')
    AlignmentMap(w, dict(vfm=VFM, vlm='tiny', vocabulary=load_class_names('voc21'))).save(art)
    clip = tiny_clip_model_cfg(width=32, layers=2, heads=2, embed_dim=16, text_width=32,
                               text_layers=1, text_heads=2, context_length=16)
    opts = (['model.clip.name=tiny', 'model.clip.pretrained=None']
            + list(flatten_options('model.clip.model_cfg', clip))
            + ['model.vfm.pretrained=False', 'model.vfm.model_kwargs.embed_dim=24',
               'model.vfm.model_kwargs.depth=1', 'model.vfm.model_kwargs.num_heads=2',
               'model.vfm.model_kwargs.img_size=64', f'model.decode_head.alignment_path={art}',
               f'test_dataloader.dataset.data_root={tmp / "toy"}',
               'test_dataloader.num_workers=0',
               'test_dataloader.dataset.pipeline.1.scale=(2048,64)', 'model.templates=[{}]',
               'model.slide_crop=64', 'model.slide_stride=32', 'randomness.seed=0'])
    return tmp, opts


def test_sweep_equals_plain_runs(setup, capsys):
    tmp, opts = setup
    stem = str(tmp / 'out' / 'sw')
    main = runpy.run_path(osp.join(ROOT, 'tools/sweep.py'))['main']
    assert main([CONFIG, '--fusion-weight', '0', '0.5', '1', '--prob-thd', '0', '0.1',
                 '--out', stem, '--cfg-options'] + opts) == 0
    out = capsys.readouterr().out
    assert re.search(r'timing: 6 settings on 3 images', out) and 'plain runs' in out
    with open(stem + '.csv') as f:
        rows = {(float(r['fusion_weight']), float(r['prob_thd'])): float(r['mIoU'])
                for r in csv.DictReader(f)}
    assert len(rows) == 6 and osp.getsize(stem + '.png') > 0 and osp.isfile(stem + '.md')
    assert len(set(rows.values())) > 1          # the settings do change the result
    for lam, thd in ((0.5, 0.1), (0.0, 0.0)):
        r = subprocess.run([sys.executable, 'tools/test.py', CONFIG, '--work-dir',
                            str(tmp / f'w{lam}{thd}'), '--cfg-options'] + opts
                           + [f'model.decode_head.fusion_weight={lam}', f'model.prob_thd={thd}'],
                           cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-3000:]
        miou = float(re.search(r'^metrics: .*\bmIoU=([0-9.]+)', r.stdout, re.M).group(1))
        assert abs(rows[(lam, thd)] - miou) < 0.006, (lam, thd, rows[(lam, thd)], miou)


def test_sweep_bad_input(setup, tmp_path, capsys):
    main = runpy.run_path(osp.join(ROOT, 'tools/sweep.py'))['main']
    assert main(['configs/nope.py']) == 2
    assert 'does not exist' in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main([CONFIG, '--fusion-weight', '1.5'])
    assert e.value.code == 2
    # a CLIP-only config has no λ to sweep
    _, opts = setup
    clip_opts = [o for o in opts if not o.startswith(('model.vfm', 'model.decode_head'))]
    assert main(['configs/sclip/sclip_vitb16_voc21.py', '--fusion-weight', '0.5', '--out',
                 str(tmp_path / 's'), '--cfg-options'] + clip_opts) == 2
    assert 'CLIP-only' in capsys.readouterr().err
    assert not osp.exists(tmp_path / 's.csv')


def _plain_miou(tmp, opts, name, extra):
    r = subprocess.run([sys.executable, 'tools/test.py', CONFIG, '--work-dir', str(tmp / name),
                        '--cfg-options'] + opts + extra, cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return float(re.search(r'^metrics: .*\bmIoU=([0-9.]+)', r.stdout, re.M).group(1))


def _sweep_rows(main, stem, lambdas, opts):
    assert main([CONFIG, '--fusion-weight', *lambdas, '--out', stem,
                 '--cfg-options'] + opts) == 0
    with open(stem + '.csv') as f:
        return {(float(r['fusion_weight']), float(r['prob_thd'])): float(r['mIoU'])
                for r in csv.DictReader(f)}


def test_sweep_whole_vfm_window_equals_plain_run(setup, capsys, monkeypatch):
    """vfm_window='whole' goes through inference's VFMWindowTokens; at the config's λ (0.9)
    the sweep's mIoU is the plain tools/test.py run's."""
    tmp, opts = setup
    whole = opts + ['model.vfm_window=whole']
    main = runpy.run_path(osp.join(ROOT, 'tools/sweep.py'))['main']
    rows = _sweep_rows(main, str(tmp / 'whole' / 'sw'), ['0', '0.9', '1'], whole)
    out = capsys.readouterr().out
    assert re.search(r'encode once [0-9.]+ s, [0-9.]+ s per setting', out), out
    thd = {t for _, t in rows}.pop()
    assert abs(rows[(0.9, thd)] - _plain_miou(tmp, whole, 'whole09', [])) < 0.006
    # the sweep's VFM saw whole images: one VFMWindowTokens field per image, one window each
    import gpua_mmseg.models.segmentor as segmentor
    seen = []

    class Spy(segmentor.VFMWindowTokens):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            seen.append((self.window, [len(f) for f in self.fields]))

    monkeypatch.setattr(segmentor, 'VFMWindowTokens', Spy)
    _sweep_rows(main, str(tmp / 'whole2' / 'sw'), ['0'], whole)
    assert seen and all(w == 'whole' and n == [1] for w, n in seen), seen


def test_sweep_gpua_logits_whatever_the_config_lambda(setup):
    """A config at λ = 1 (its head skips the VFM) still sweeps λ < 1 from the real GPUA logits."""
    tmp, opts = setup
    main = runpy.run_path(osp.join(ROOT, 'tools/sweep.py'))['main']
    ref = _sweep_rows(main, str(tmp / 'l09' / 'sw'), ['0', '0.5'], opts)
    at1 = _sweep_rows(main, str(tmp / 'l1' / 'sw'), ['0', '0.5'],
                      opts + ['model.decode_head.fusion_weight=1.0'])
    assert at1 == ref


def test_sweep_encodes_each_image_once_whatever_the_settings(setup, monkeypatch):
    """The encoders run as often for 11 λ x 2 prob_thd as for one setting (no re-encoding)."""
    tmp, opts = setup
    from gpua_mmseg.models.clip.encoder import CLIPEncoder
    from gpua_mmseg.models.vfm import VFMEncoder
    calls = {'clip': 0, 'vfm': 0}

    def counting(cls, key):
        orig = cls.patch_features

        def wrapped(self, *a, **k):
            calls[key] += 1
            return orig(self, *a, **k)
        monkeypatch.setattr(cls, 'patch_features', wrapped)
    counting(CLIPEncoder, 'clip')
    counting(VFMEncoder, 'vfm')
    main = runpy.run_path(osp.join(ROOT, 'tools/sweep.py'))['main']
    _sweep_rows(main, str(tmp / 'one' / 'sw'), ['0.5'], opts)
    one = dict(calls)
    calls.update(clip=0, vfm=0)
    assert main([CONFIG, '--fusion-weight'] + [f'{0.1 * i:.1f}' for i in range(11)]
                + ['--prob-thd', '0', '0.1', '--out', str(tmp / 'many' / 'sw'),
                   '--cfg-options'] + opts) == 0
    assert one['clip'] > 0 and one['vfm'] > 0 and calls == one, (one, calls)
