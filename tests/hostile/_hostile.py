"""Helpers of the hostile-input tests: a tiny random CLIP config for the real CLIs and a
subprocess runner (fixtures live in conftest.py)."""
import os
import os.path as osp
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOLS = osp.join(ROOT, 'tools')
SCLIP_CONFIG = 'configs/sclip/sclip_vitb16_voc21.py'


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
