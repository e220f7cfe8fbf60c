"""Issue 11 item 12 (tools/test.py): model, checkpoint, artifact and output-folder errors give
one line naming the file or value and the fix, exit status 2, no traceback -- through the real
CLI, several runs side by side."""
import os
import os.path as osp
import zipfile

import pytest
from _hostile import SCLIP_CONFIG, TOOLS, finish, start

GPUA_CONFIG = 'configs/gpua/gpua_sclip_dinov3_vitb16_voc21.py'
TINY_VFM = ['model.vfm.pretrained=False', 'model.vfm.model_kwargs.embed_dim=24',
            'model.vfm.model_kwargs.depth=1', 'model.vfm.model_kwargs.num_heads=2',
            'model.vfm.model_kwargs.img_size=64']


def _readonly_dir(tmp_path):
    """A folder this process cannot write into (root ignores mode bits: use /sys)."""
    if os.geteuid() != 0:
        d = tmp_path / 'ro'
        d.mkdir()
        d.chmod(0o555)
        return str(d / 'sub')
    probe = '/sys/gpua_mmseg_hostile_probe'
    try:
        os.mkdir(probe)
    except OSError:
        return probe + '/sub'
    os.rmdir(probe)
    pytest.skip('no read-only folder available to root here')


def test_help_documents_exit_statuses():
    rc, out, _ = finish(start([osp.join(TOOLS, 'test.py'), '--help']))
    assert rc == 0 and 'exit status' in out and '2  bad input' in out


def test_bad_inputs_one_line_exit_2(tmp_path, tiny_sclip_options):
    bad_st = tmp_path / 'corrupt.safetensors'
    bad_st.write_bytes(b'\x40\x00\x00\x00\x00\x00\x00\x00{"w": {"dtype": "F32", "shape": [4')
    fake_ts = tmp_path / 'fake_torchscript.pt'
    with zipfile.ZipFile(fake_ts, 'w') as zf:
        zf.writestr('archive/constants.pkl', b'not a pickle')
        zf.writestr('archive/code/__torch__.py', 'def forward(self): pass')
    missing_w = tmp_path / 'no' / 'ViT-B-16.pt'
    missing_art = tmp_path / 'art' / 'missing.safetensors'
    junk_art = tmp_path / 'junk.safetensors'
    junk_art.write_bytes(os.urandom(256))
    ro = _readonly_dir(tmp_path)
    test_py = osp.join(TOOLS, 'test.py')
    opts = ['--cfg-options'] + tiny_sclip_options
    wd = ['--work-dir', str(tmp_path / 'wd')]
    cases = {
        # name: (argv, substrings the stderr must hold)
        'corrupt safetensors': ([SCLIP_CONFIG, '--checkpoint', str(bad_st)] + wd + opts,
                                [str(bad_st), 'safetensors']),
        'fake torchscript': ([SCLIP_CONFIG, '--checkpoint', str(fake_ts)] + wd + opts,
                             [str(fake_ts), 'TorchScript']),
        # the real ViT-B/16 config, weights file missing
        'missing clip weights': ([SCLIP_CONFIG] + wd + ['--cfg-options',
                                 f'model.clip.pretrained={missing_w}'],
                                 [str(missing_w), 'does not exist']),
        'missing artifact': ([GPUA_CONFIG] + wd + opts + TINY_VFM
                             + [f'model.decode_head.alignment_path={missing_art}'],
                             [str(missing_art), 'tools/fit_alignment.py']),
        'corrupt artifact': ([GPUA_CONFIG] + wd + opts + TINY_VFM
                             + [f'model.decode_head.alignment_path={junk_art}'],
                             [str(junk_art)]),
        'read-only --out': ([SCLIP_CONFIG, '--out', ro] + wd + opts, ['--out', ro, 'writable']),
        'read-only --work-dir': ([SCLIP_CONFIG, '--work-dir', ro] + opts,
                                 ['--work-dir', ro, 'writable']),
        'unknown option key': ([SCLIP_CONFIG] + wd + opts + ['model.no_such_arg=1'],
                               ['no_such_arg']),
    }
    procs = {name: start([test_py] + argv) for name, (argv, _) in cases.items()}
    failures = []
    for name, proc in procs.items():
        rc, out, err = finish(proc)
        lines = [ln for ln in err.strip().splitlines() if ln.startswith('error: ')]
        ok = (rc == 2 and 'Traceback' not in err and len(lines) == 1
              and all(s in err for s in cases[name][1]))
        if not ok:
            failures.append(f'{name}: rc={rc}\n{err[-1500:]}')
    assert not failures, '\n\n'.join(failures)
    # nothing written for the outputs that were refused
    assert not osp.exists(ro)
