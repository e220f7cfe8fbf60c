"""Issue 11 item 1: a malicious pickle given as a checkpoint never runs its payload -- through
tools/test.py --checkpoint and through MMSeg's own tools/test.py with our config -- also with
TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1; legitimate checkpoints (state dict, Runner dict with meta
and message hub, safetensors) still load."""
import os
import os.path as osp
import runpy

import numpy as np
import pytest
import torch
from _hostile import ROOT, SCLIP_CONFIG, TOOLS, finish, start

from gpua_mmseg.checkpoint import CheckpointError, load_checkpoint_file

FORCE_UNSAFE = {'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD': '1'}


class _Payload:
    """Unpickling this creates ``marker`` (what an attacker's os.system would do)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def _malicious(path, marker):
    torch.save({'state_dict': {'w': torch.ones(1)}, 'meta': {}, 'x': _Payload(str(marker))},
               str(path))
    return str(path)


def _mmseg_test_py():
    import mmseg
    path = osp.join(osp.dirname(mmseg.__file__), '.mim', 'tools', 'test.py')
    if not osp.isfile(path):
        pytest.skip('MMSeg installed without its .mim/tools/test.py')
    return path


def test_payload_is_real(tmp_path):
    """Guard: the same file does run its payload under a plain unsafe torch.load."""
    marker = tmp_path / 'pwned'
    torch.load(_malicious(tmp_path / 'evil.pth', marker), weights_only=False)
    assert marker.exists()


def test_loader_refuses_payload_even_when_forced_unsafe(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    marker = tmp_path / 'pwned'
    evil = _malicious(tmp_path / 'evil.pth', marker)
    with pytest.raises(CheckpointError, match='could run code') as err:
        load_checkpoint_file(evil)
    assert evil in str(err.value) and not marker.exists()
    # and through MMEngine's own loader (registered by importing gpua_mmseg.models)
    import gpua_mmseg.models  # noqa: F401
    from mmengine.runner.checkpoint import _load_checkpoint
    with pytest.raises(CheckpointError):
        _load_checkpoint(evil)
    assert not marker.exists()


def test_old_torch_refuses_pickles_but_reads_safetensors(tmp_path, monkeypatch):
    import gpua_mmseg.checkpoint as ck
    from safetensors.torch import save_file
    monkeypatch.setattr(ck, '_torch_version', lambda: (2, 5))
    torch.save({'w': torch.ones(2)}, str(tmp_path / 'sd.pth'))
    with pytest.raises(CheckpointError, match=r'torch>=2\.6'):
        ck.load_checkpoint_file(str(tmp_path / 'sd.pth'))
    save_file({'w': torch.ones(2)}, str(tmp_path / 'sd.safetensors'))
    assert torch.equal(ck.load_checkpoint_file(str(tmp_path / 'sd.safetensors'))['w'],
                       torch.ones(2))


def test_legitimate_checkpoints_load(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    from mmengine.logging import MessageHub
    from safetensors.torch import save_file
    sd = {'a.weight': torch.randn(3, 2), 'b': torch.arange(4)}
    torch.save(sd, str(tmp_path / 'plain.pth'))
    hub = MessageHub.get_instance('hostile_01')
    hub.update_scalar('train/loss', 0.5, resumed=True)  # a HistoryBuffer in the pickle
    runner_ckpt = {'meta': {'epoch': 3, 'seed': np.int64(7), 'hist': np.zeros(2),
                            'dataset_meta': {'classes': ('a', 'b'), 'palette': [[0, 0, 0]]}},
                   'state_dict': sd, 'message_hub': hub.state_dict()}
    torch.save(runner_ckpt, str(tmp_path / 'runner.pth'))
    save_file(sd, str(tmp_path / 'w.safetensors'))
    save_file(sd, str(tmp_path / 'renamed.bin'))  # recognised by content, not name
    for name in ('plain.pth', 'w.safetensors', 'renamed.bin'):
        got = load_checkpoint_file(str(tmp_path / name))
        assert set(got) == set(sd) and all(torch.equal(got[k], sd[k]) for k in sd), name
    got = load_checkpoint_file(str(tmp_path / 'runner.pth'))
    assert torch.equal(got['state_dict']['a.weight'], sd['a.weight'])
    assert got['meta']['seed'] == 7 and got['meta']['dataset_meta']['classes'] == ('a', 'b')


def test_torchscript_and_object_arrays_refused(tmp_path):
    ts = str(tmp_path / 'model.pt')
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), ts)
    with pytest.raises(CheckpointError, match='TorchScript'):
        load_checkpoint_file(ts)
    obj = str(tmp_path / 'obj.pth')
    torch.save({'state_dict': {}, 'meta': np.array([{'x': 1}], dtype=object)}, obj)
    with pytest.raises(CheckpointError, match='could run code'):
        load_checkpoint_file(obj)


def _tiny_state_dict_checkpoint(path, options):
    """A Runner-style checkpoint of the tiny model the CLI will build."""
    tool = runpy.run_path(osp.join(TOOLS, 'test.py'))
    cfg = tool['build_cfg'](tool['parse_args']([SCLIP_CONFIG, '--cfg-options'] + options))
    from mmseg.registry import MODELS
    model = MODELS.build(cfg.model)
    torch.save({'meta': {'mmengine_version': '0.10.7', 'dataset_meta': {'classes': ('a',)}},
                'state_dict': model.state_dict()}, str(path))
    return str(path)


def test_cli_never_runs_payload(tmp_path, tiny_sclip_options):
    """Three real CLI runs side by side, all with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1."""
    marker1, marker2 = tmp_path / 'pwned_ours', tmp_path / 'pwned_mmseg'
    evil1 = _malicious(tmp_path / 'evil1.pth', marker1)
    evil2 = _malicious(tmp_path / 'evil2.pth', marker2)
    good = _tiny_state_dict_checkpoint(tmp_path / 'good.pth', tiny_sclip_options)
    opts = ['--cfg-options'] + tiny_sclip_options
    procs = {
        'ours': start([osp.join(TOOLS, 'test.py'), SCLIP_CONFIG, '--checkpoint', evil1,
                       '--work-dir', str(tmp_path / 'wd1')] + opts, FORCE_UNSAFE),
        # MMSeg's own CLI (what `mim test` runs): our config's custom_imports install the loader
        'mmseg': start([_mmseg_test_py(), osp.join(ROOT, SCLIP_CONFIG), evil2, '--work-dir',
                        str(tmp_path / 'wd2')] + opts, FORCE_UNSAFE),
        'good': start([osp.join(TOOLS, 'test.py'), SCLIP_CONFIG, '--checkpoint', good,
                       '--work-dir', str(tmp_path / 'wd3')] + opts, FORCE_UNSAFE),
    }
    res = {k: finish(p) for k, p in procs.items()}

    rc, out, err = res['ours']
    assert rc == 2, out[-2000:] + err[-3000:]
    assert 'Traceback' not in err and 'could run code' in err and evil1 in err
    assert not marker1.exists()

    rc, out, err = res['mmseg']
    assert rc != 0 and 'could run code' in err, out[-2000:] + err[-3000:]
    assert not marker2.exists()

    rc, out, err = res['good']
    assert rc == 0, out[-2000:] + err[-3000:]
    assert f'Load checkpoint from {good}' in out + err and 'mIoU=' in out
