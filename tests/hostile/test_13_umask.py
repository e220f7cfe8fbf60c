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
