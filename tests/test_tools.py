"""Command-line tools: make_toy_dataset.py, test.py (end to end on a toy dataset with a tiny
random CLIP), dist_test.sh argument handling."""
import hashlib
import os
import os.path as osp
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from _helpers import flatten_options

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOLS = osp.join(ROOT, 'tools')


def _run(args, **kw):
    return subprocess.run([sys.executable] + args, capture_output=True, text=True, cwd=ROOT,
                          **kw)


def _digest(folder):
    h = hashlib.sha256()
    for dirpath, _, files in sorted(os.walk(folder)):
        for f in sorted(files):
            h.update(f.encode())
            with open(osp.join(dirpath, f), 'rb') as fh:
                h.update(fh.read())
    return h.hexdigest()


def test_make_toy_dataset(tmp_path):
    out = tmp_path / 'toy'
    r = _run([osp.join(TOOLS, 'make_toy_dataset.py'), str(out), '--n', '3', '--size', '40',
              '56', '--seed', '3'])
    assert r.returncode == 0, r.stderr
    ids = (out / 'ImageSets/Segmentation/val.txt').read_text().split()
    assert len(ids) == 3
    for k in ids:
        img = Image.open(out / 'JPEGImages' / f'{k}.jpg')
        mask = Image.open(out / 'SegmentationClass' / f'{k}.png')
        assert img.mode == 'RGB' and img.size == (56, 40) and mask.size == (56, 40)
        assert mask.mode == 'P'
        lab = np.array(mask)
        assert 255 in lab and 0 in lab and set(np.unique(lab)) <= set(range(21)) | {255}
        assert (lab != 255).mean() > 0.5          # borders, not a mask full of void
    # no temporary folder left behind; same seed -> identical files; refuses to clobber
    assert sorted(os.listdir(tmp_path)) == ['toy']
    r2 = _run([osp.join(TOOLS, 'make_toy_dataset.py'), str(tmp_path / 'toy2'), '--n', '3',
               '--size', '40', '56', '--seed', '3'])
    assert r2.returncode == 0 and _digest(out) == _digest(tmp_path / 'toy2')
    r3 = _run([osp.join(TOOLS, 'make_toy_dataset.py'), str(out)])
    assert r3.returncode != 0 and '--overwrite' in r3.stderr
    r4 = _run([osp.join(TOOLS, 'make_toy_dataset.py'), str(tmp_path / 'x'), '--n', '0'])
    assert r4.returncode != 0 and '--n' in r4.stderr and 'Traceback' not in r4.stderr


def test_make_toy_dataset_shapes_source(tmp_path):
    r = _run([osp.join(TOOLS, 'make_toy_dataset.py'), str(tmp_path / 's'), '--n', '2',
              '--source', 'shapes', '--seed', '1'])
    assert r.returncode == 0, r.stderr
    # synthetic images follow the labels: two classes differ in mean colour
    img = np.asarray(Image.open(tmp_path / 's/JPEGImages/toy_0000.jpg'), dtype=np.float32)
    lab = np.array(Image.open(tmp_path / 's/SegmentationClass/toy_0000.png'))
    fg = [c for c in np.unique(lab) if c not in (0, 255)]
    assert fg and np.abs(img[lab == 0].mean(0) - img[lab == fg[0]].mean(0)).max() > 5


def test_test_py_bad_config():
    r = _run([osp.join(TOOLS, 'test.py'), 'configs/nope/nope.py'])
    assert r.returncode != 0 and 'does not exist' in r.stderr and 'Traceback' not in r.stderr


def test_dist_test_sh_usage():
    r = subprocess.run(['bash', osp.join(TOOLS, 'dist_test.sh')], capture_output=True, text=True)
    assert r.returncode == 2 and 'usage' in r.stderr
    r = subprocess.run(['bash', osp.join(TOOLS, 'dist_test.sh'), 'nope.py', '1'],
                       capture_output=True, text=True)
    assert r.returncode == 2 and 'does not exist' in r.stderr


def _tiny_clip_options():
    from gpua_mmseg.models.clip import tiny_clip_model_cfg
    # 12 blocks so SC-CLIP's default layer indices exist; narrow and shallow text tower
    cfg = tiny_clip_model_cfg(width=32, layers=12, heads=2, embed_dim=16, text_width=32,
                              text_layers=1, text_heads=2, context_length=16)
    return ['model.clip.name=tiny', 'model.clip.pretrained=None'] + list(
        flatten_options('model.clip.model_cfg', cfg))


@pytest.fixture(scope='module')
def e2e_runs(tmp_path_factory):
    """Run tools/test.py for SCLIP and SC-CLIP on a toy VOC dataset, concurrently."""
    base = tmp_path_factory.mktemp('e2e')
    toy = base / 'toy'
    r = _run([osp.join(TOOLS, 'make_toy_dataset.py'), str(toy), '--n', '2', '--size', '64',
              '80'])
    assert r.returncode == 0, r.stderr
    procs = {}
    for method in ('sclip', 'scclip'):
        cmd = [sys.executable, osp.join(TOOLS, 'test.py'),
               f'configs/{method}/{method}_vitb16_voc21.py', '--work-dir', str(base / method),
               '--out', str(base / f'{method}_pred'), '--cfg-options',
               f'test_dataloader.dataset.data_root={toy}', 'test_dataloader.num_workers=0',
               # small input, windows and vocabulary prompts keep the CPU run to seconds
               'test_dataloader.dataset.pipeline.1.scale=(2048,64)', 'model.templates=[{}]',
               'model.slide_crop=64', 'model.slide_stride=32'] + _tiny_clip_options()
        procs[method] = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True)
    out = {}
    for method, p in procs.items():
        stdout, _ = p.communicate(timeout=300)
        out[method] = (p.returncode, stdout, base)
    return out


@pytest.mark.parametrize('method', ['sclip', 'scclip'])
def test_test_py_end_to_end(e2e_runs, method):
    rc, stdout, base = e2e_runs[method]
    assert rc == 0, stdout[-3000:]
    # MMSeg's per-class IoU table, then the summary line
    assert 'per class results' in stdout
    assert re.search(r'\|\s+aeroplane\s+\|', stdout) and re.search(r'\|\s+tvmonitor\s+\|', stdout)
    line = [ln for ln in stdout.splitlines() if ln.startswith('metrics: ')]
    assert len(line) == 1 and 'mIoU=' in line[0]
    miou = float(line[0].split('mIoU=')[1].split(',')[0])
    # the summary is the mean over the classes present of the table's per-class IoU (MMSeg
    # prints both rounded to 2 decimals; absent classes show nan and are excluded)
    ious = [float(v) for v in re.findall(r'^\|\s+[a-z ]+?\s+\|\s+([0-9.]+|nan)\s+\|', stdout, re.M)
            if v != 'nan']
    assert ious, stdout[-3000:]
    assert abs(miou - sum(ious) / len(ious)) < 0.02, (miou, ious)
    preds = sorted(os.listdir(base / f'{method}_pred'))
    assert preds == ['toy_0000.png', 'toy_0001.png']
    pred = np.array(Image.open(base / f'{method}_pred' / 'toy_0000.png'))
    assert pred.shape == (64, 80)
