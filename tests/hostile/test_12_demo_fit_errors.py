"""Issue 11 item 12, demo / fit / CLIP-loading part: each bad input gives one line that names
the file or value and the fix, exit status 2, no traceback and nothing half-written; a bad image
inside a folder is reported and skipped while the rest of the batch completes; a zero-byte
dataset image is named by tools/fit_alignment.py; a TorchScript CLIP archive is read without
running its code.  (tools/test.py's part: test_12_cli_errors.py.)"""
import os
import pickle
import zipfile

import pytest
import torch

from _hostile import DEMO, finish, start
from test_demo import demo  # noqa: F401  (the demo module fixture)
from test_issue8_part_a import _demo_args, gpua_setup  # noqa: F401


def _one_error(r):
    lines = [ln for ln in r.err.splitlines() if ln.startswith('ERROR: ')]
    assert r.rc == 2 and 'Traceback' not in r.err and len(lines) == 1, (r.rc, r.err[-3000:])
    return lines[0]


@pytest.mark.parametrize('case, words', [
    ('zero-byte image', ['empty.png', 'empty (0 bytes)', 'replace or remove']),
    ('not an image', ['notes.png', 'not an image', 'replace or remove']),
    ('symlink loop', ['loop.png', 'symlink loop']),
    ('read-only out', ['--out', 'writable']),
    ('missing clip weights', ['ViT-B-16.pt', 'does not exist', 'fix the path']),
    ('disk full', ['x_png_overlay.png', 'No space left on device', 'free disk space']),
])
def test_demo_bad_input_one_line_exit_2(demo_runs, case, words):
    r = demo_runs[case]
    text = _one_error(r) + '\n' + r.err
    for w in words:
        assert w in text, (case, w, r.err[-2000:])
    out = r.outdir
    # nothing half-written: no picture, no temporary file (the folder may exist when created)
    assert not os.path.exists(out) or os.listdir(out) == [], os.listdir(out)


def test_bad_images_in_a_folder_reported_and_skipped(demo_runs):
    b = demo_runs['batch']
    assert b.rc == 2, b.err[-3000:]  # documented: 2 when an input was skipped
    assert 'Traceback' not in b.err
    why = {'empty.png': 'empty (0 bytes)', 'notes.png': 'not an image',
           'cut.png': 'truncated', 'loop.png': 'symlink loop', 'dangling.png': 'dangling'}
    warned = [ln for ln in b.err.splitlines() if ln.startswith('WARNING: skipped: ')]
    for name, words in why.items():
        hits = [ln for ln in warned if name in ln]
        assert len(hits) == 1 and words in hits[0], (name, warned)
        assert not list(b.outdir.glob(name.split('.')[0] + '_*'))
    assert f'{len(why)} of 9 images could not be read' in b.err
    # the rest of the batch completed
    written = sorted(p.name for p in b.outdir.iterdir() if not p.name.startswith('.'))
    assert written == sorted(f'{s}_{k}.png' for s in ('grey16', 'rotated', 'x_jpg', 'x_png')
                             for k in ('labels', 'overlay'))


def test_demo_fit_artifact_metadata_json_list(demo, gpua_setup, tmp_path, capsys):  # noqa: F811
    import json

    from safetensors.torch import save_file
    cfg, imgs, _, _ = gpua_setup
    art = tmp_path / 'listmeta.safetensors'
    save_file({'W': torch.eye(32), 'mu_v': torch.zeros(32), 'mu_c': torch.zeros(32)}, str(art),
              metadata={'gpua_mmseg': json.dumps([1, 2, 3]), 'meta': json.dumps([1, 2, 3])})
    rc = demo.main([imgs, '--classes', 'cat; background', '--config', cfg, '--alignment',
                    str(art), '--weights', 'random', '--out', str(tmp_path / 'o')])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith('ERROR: ')]
    assert rc == 2 and len(lines) == 1 and str(art) in lines[0], err
    assert 'JSON list' in lines[0]
    assert not (tmp_path / 'o').exists()


def test_demo_fit_fewer_patches_than_classes(demo, gpua_setup, tmp_path, capsys):  # noqa: F811
    cfg, imgs, cache, _ = gpua_setup
    classes = '; '.join(f'thing{i}' for i in range(40)) + '; background'
    one = tmp_path / 'one'
    one.mkdir()
    from PIL import Image
    Image.open(os.path.join(imgs, 'coffee.png')).crop((0, 0, 32, 32)).save(one / 'tiny.png')
    rc = demo.main(_demo_args(cfg, str(one), tmp_path / 'o', classes, '--weights', 'random',
                              '--fit'))
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith('ERROR: ')]
    assert rc == 2 and len(lines) == 1, err
    assert 'patches' in lines[0] and '41 text queries' in lines[0] and 'fewer classes' in lines[0]
    assert not (cache / 'alignments').exists() or os.listdir(cache / 'alignments') == []
    assert not (tmp_path / 'o').exists()


def test_fit_tool_names_zero_byte_dataset_image(fit_runs):
    r = fit_runs.runs['zero-byte image']
    assert r.rc == 2 and 'Traceback' not in r.err, r.err[-3000:]
    line = [ln for ln in r.err.splitlines() if ln.startswith('error: ')]
    assert len(line) == 1 and str(fit_runs.emptied) in line[0] and '0 bytes' in line[0]
    assert 'replace or remove' in line[0]
    assert not (fit_runs.root / 'zero' / 'map.safetensors').exists()


# ---------------------------------------------------------------- TorchScript without code
_PAYLOAD = 'import pathlib; pathlib.Path({!r}).write_text("pwned")'


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (exec, (_PAYLOAD.format(self.marker),))


def _fake_torchscript(path, data_pkl, code='def forward(self):\n  pass\n'):
    with zipfile.ZipFile(path, 'w') as zf:
        zf.writestr('archive/data.pkl', data_pkl)
        zf.writestr('archive/constants.pkl', pickle.dumps(()))
        zf.writestr('archive/code/__torch__.py', code)
        zf.writestr('archive/version', '3\n')


def test_torchscript_clip_archive_runs_no_code(tmp_path):
    """A malicious or fake TorchScript --clip-weights file: one line naming it, exit 2, and the
    payload never runs (also under TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1)."""
    from PIL import Image

    from _hostile import tiny_demo_config
    from gpua_mmseg.models.clip.loading import read_state_dict
    marker = tmp_path / 'pwned'
    evil = tmp_path / 'ViT-evil.pt'
    _fake_torchscript(evil, pickle.dumps(_Evil(str(marker)), protocol=2))
    fake = tmp_path / 'ViT-fake.pt'
    _fake_torchscript(fake, b'this is not a pickle')
    cfg = tiny_demo_config(tmp_path)
    Image.new('RGB', (32, 32), (90, 120, 30)).save(tmp_path / 'a.png')
    cases = [(evil, '1'), (fake, '0')]  # the payload test under the override (the harder case)
    procs = [start([DEMO, str(tmp_path / 'a.png'), '--config', cfg, '--clip-weights', str(p),
                    '--out', str(tmp_path / f'o_{i}'), '--device', 'cpu'],
                   env_extra=dict(TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=force))
             for i, (p, force) in enumerate(cases)]
    for i, ((p, _), proc) in enumerate(zip(cases, procs)):
        rc, _, err = finish(proc)
        lines = [ln for ln in err.splitlines() if ln.startswith('ERROR: ')]
        assert rc == 2 and 'Traceback' not in err and len(lines) == 1, err[-3000:]
        assert str(p) in lines[0] and 'TorchScript' in lines[0]
        assert 'nothing in it was run' in lines[0]
        assert not (tmp_path / f'o_{i}').exists()
    assert not marker.exists()  # the payload did not run
    with pytest.raises(ValueError, match=r'refused global \w+\.exec'):
        read_state_dict(str(evil))
    assert not marker.exists()


def test_torchscript_state_dict_equals_jit_load(tmp_path):
    """The code-free reader gives exactly torch.jit.load(...).state_dict() (parameters and
    buffers, dtypes kept, plain tensor attributes left out)."""
    from gpua_mmseg.models.clip.loading import read_torchscript_state_dict

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 2).half()
            self.register_buffer('scale', torch.tensor([2.0]))
            self.attn_mask = torch.ones(2, 2)  # an attribute, not state

        def forward(self, x):
            return self.lin(x) * self.scale + self.attn_mask.sum()

    class Root(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.visual = Block()
            self.proj = torch.nn.Parameter(torch.randn(4, 5)[:, 1:4])  # a strided view
            self.register_buffer('input_resolution', torch.tensor(224))

        def forward(self, x):
            return self.visual(x)

    path = tmp_path / 'ViT-tiny.pt'
    torch.jit.script(Root()).save(str(path))
    want = torch.jit.load(str(path)).state_dict()
    got = read_torchscript_state_dict(str(path))
    assert sorted(got) == sorted(want) and 'visual.attn_mask' not in got
    for k, v in want.items():
        assert got[k].dtype == v.dtype and torch.equal(got[k], v), k


def test_api_segment_many_skips_unreadable_images(demo_runs, tmp_path):
    """The Python API's folder call: bad images listed in ``report.skipped``, the rest done;
    ``skip_unreadable=False`` raises the same one-line error."""
    from _hostile import tiny_demo_config
    from gpua_mmseg.apis import OpenVocabSegmenter
    from gpua_mmseg.apis.io import UnreadableImageError
    imgs = demo_runs['batch'].imgs
    seg = OpenVocabSegmenter(tiny_demo_config(tmp_path), classes='cat; background',
                             weights='random', device='cpu')
    report = seg.segment_many(imgs)
    skipped = sorted(os.path.basename(p) for p, _ in report.skipped)
    assert skipped == ['cut.png', 'dangling.png', 'empty.png', 'loop.png', 'notes.png']
    assert len(report.results) == 4
    assert all(os.path.basename(p) in why for p, why in report.skipped)
    with pytest.raises(UnreadableImageError, match=r"cut\.png.*truncated"):
        seg.segment_many([imgs / 'x.png', imgs / 'cut.png'], skip_unreadable=False)
