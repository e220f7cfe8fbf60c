"""Helpers of the hostile-input tests: a tiny random CLIP config for the real CLIs and a
subprocess runner (fixtures live in conftest.py)."""
import os
import os.path as osp
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOLS = osp.join(ROOT, 'tools')
SCLIP_CONFIG = 'configs/sclip/sclip_vitb16_voc21.py'
# longer than the tiny CLIP's text context (item 4: truncation must be warned about)
LONG_NAME = 'a ' + ' '.join(['very'] * 20) + ' long class name'


def tiny_clip_options():
    """``--cfg-options`` for a 2-block random CLIP, one prompt, one 32 px window."""
    from _helpers import flatten_options
    from gpua_mmseg.models.clip import tiny_clip_model_cfg
    cfg = tiny_clip_model_cfg(width=32, layers=2, heads=2, embed_dim=16, text_width=32,
                              text_layers=1, text_heads=2, context_length=16)
    return (['model.clip.name=tiny', 'model.clip.pretrained=None', 'model.templates=[{}]',
             'model.slide_crop=32', 'model.slide_stride=32']
            + list(flatten_options('model.clip.model_cfg', cfg)))


def start(args, env_extra=None, cwd=ROOT):
    """Start ``python args...`` (stdout+stderr captured separately)."""
    env = dict(os.environ)
    env.update(env_extra or {})
    return subprocess.Popen([sys.executable] + list(args), cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def run(args, env_extra=None, timeout=300):
    return finish(start(args, env_extra), timeout)


# ---------------------------------------------------------------- demo / fit helpers (H7)
DEMO = osp.join(TOOLS, 'demo.py')
FIT = osp.join(TOOLS, 'fit_alignment.py')
GPUA_CONFIG = 'configs/gpua/gpua_sclip_dinov3_vitb16_voc21.py'


def tiny_demo_config(folder, gpua_art=None):
    """A tiny random demo config file (test_demo's, 16-token text context); GPUA with
    ``gpua_art`` as the config's artifact path."""
    from test_demo import TINY_GPUA, TINY_MODEL

    from gpua_mmseg.apis import resolve_config
    extra = '' if gpua_art is None else TINY_GPUA.replace('{art}', str(gpua_art))
    path = osp.join(str(folder), 'tiny_gpua.py' if gpua_art else 'tiny.py')
    with open(path, 'w') as f:
        f.write(f"_base_ = '{resolve_config('sclip')}'\n" + TINY_MODEL.replace('{extra}', extra))
    return path


def save_tiny_clip_weights(path, seed=1):
    """A ``.safetensors`` file of the tiny demo config's CLIP (for ``--clip-weights``)."""
    import torch
    from safetensors.torch import save_file
    from test_demo import TINY_MODEL

    from gpua_mmseg.models.clip import create_open_clip
    ns = {}
    exec(TINY_MODEL.replace('{extra}', ''), {}, ns)
    torch.manual_seed(seed)
    model, _ = create_open_clip('tiny', None, model_cfg=ns['model']['clip']['model_cfg'])
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path)


def start_patched(patch, script, args, env_extra=None, umask=None):
    """Start the real CLI ``script`` (as ``__main__``, argv ``args``) after ``patch`` (Python
    source) ran in the same process: simulates a full disk or a failing library call."""
    code = (f'import runpy, sys\n{patch}\n'
            f'sys.argv = {[script] + [str(a) for a in args]!r}\n'
            f'runpy.run_path({script!r}, run_name="__main__")\n')
    env = dict(os.environ)
    env.update(env_extra or {})
    kw = {} if umask is None else dict(umask=umask)
    return subprocess.Popen([sys.executable, '-c', code], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def dead_pid():
    """The pid of a process that has exited (what a ``kill -9``-ed writer leaves behind)."""
    p = subprocess.Popen([sys.executable, '-c', 'pass'])
    p.wait()
    return p.pid


def no_traceback(err):
    return 'Traceback' not in err
