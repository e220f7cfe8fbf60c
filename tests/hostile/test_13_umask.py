"""Issue 11 item 13 (eval_all / benchmark): written tables get the mode a plain open() gives
under the umask (not mkstemp's 0600) and no temporary file stays behind.  The benchmark's
--memory-out table is checked the same way in test_11_memory_bound.py (same atomic writer)."""
import os
import os.path as osp
import runpy
import stat

import pytest
from _hostile import SCLIP_CONFIG, TOOLS

ROOT = osp.dirname(TOOLS)


@pytest.mark.parametrize('mask', [0o022, 0o027, 0o077])
def test_eval_all_tables_follow_umask(tmp_path, mask):
    main = runpy.run_path(osp.join(TOOLS, 'eval_all.py'))['main']
    # the table writing is what is checked: each config "evaluates" to a fixed mIoU here
    main.__globals__['evaluate'] = lambda config, args: 55.0
    out = tmp_path / 'tables' / 'all.md'
    old = os.umask(mask)
    try:
        rc = main(['--configs', osp.join(ROOT, SCLIP_CONFIG), '--out', str(out)])
    finally:
        os.umask(old)
    assert rc == 0
    assert '| sclip_vitb16 | 55.00 | 55.00 |' in out.read_text()
    for f in (out, out.with_suffix('.csv')):
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o666 & ~mask, f
    assert sorted(p.name for p in out.parent.iterdir()) == ['all.csv', 'all.md']


# ---------------------------------------------------------------- demo PNGs, toy datasets (H7)
def _modes(root):
    """``{relative path: mode}`` of ``root`` itself and everything below it."""
    out = {'.': stat.S_IMODE(os.stat(root).st_mode)}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            p = osp.join(dirpath, n)
            out[osp.relpath(p, root)] = stat.S_IMODE(os.stat(p).st_mode)
    return out


def test_demo_pngs_follow_umask(demo_runs):
    """The batch run (umask 022): every picture 0644, no hidden temporary file of its own."""
    b = demo_runs['batch']
    pngs = [p for p in b.outdir.iterdir() if p.suffix == '.png' and not p.name.startswith('.')]
    assert len(pngs) == 8
    assert {p.name: stat.S_IMODE(os.stat(p).st_mode) for p in pngs} == {
        p.name: 0o644 for p in pngs}


@pytest.mark.parametrize('mask', [0o022, 0o027])
def test_toy_dataset_roots_follow_umask(tmp_path, mask):
    """tools/toyworld_make_dataset.py and tools/make_toy_dataset.py: the dataset root and its
    folders get 0777 & ~umask (not mkdtemp's 0700), files 0666 & ~umask."""
    toyworld = runpy.run_path(osp.join(TOOLS, 'toyworld_make_dataset.py'))['main']
    voc = runpy.run_path(osp.join(TOOLS, 'make_toy_dataset.py'))['main']
    old = os.umask(mask)
    try:
        assert toyworld([str(tmp_path / 'world'), '--size', '16', '--splits', 'val:1']) in (0, None)
        assert voc([str(tmp_path / 'voc'), '--n', '1', '--size', '16', '16']) in (0, None)
    finally:
        os.umask(old)
    for root in (tmp_path / 'world', tmp_path / 'voc'):
        modes = _modes(root)
        assert len(modes) > 4
        for rel, mode in modes.items():
            want = 0o777 & ~mask if osp.isdir(root / rel) else 0o666 & ~mask
            assert mode == want, (root, rel, oct(mode))
