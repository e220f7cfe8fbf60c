"""MMSeg-facing models.  Importing this module registers them with MMSeg's registries.

The mmcv-lite placeholder must be installed before anything imports ``mmseg``.
"""
from .._mmcv_compat import install_mmcv_ext_placeholder

install_mmcv_ext_placeholder()

from ..checkpoint import register_mmengine_loaders  # noqa: E402

# Configs import this module (custom_imports): from then on MMEngine's load_from / --checkpoint
# go through gpua_mmseg.checkpoint, which never unpickles code.
register_mmengine_loaders()

from . import clip  # noqa: E402,F401  (registers the last-block variants)
from .clip import CLIPEncoder, build_clip_encoder  # noqa: E402
from .gpua_head import GPUAHead  # noqa: E402
from .segmentor import GPUASegmentor  # noqa: E402
from .vfm import VFMEncoder, build_vfm_encoder  # noqa: E402
from ..datasets import class_check as _class_check  # noqa: E402,F401  (GPUAClassNamesCheckHook)

__all__ = ['CLIPEncoder', 'build_clip_encoder', 'GPUAHead', 'GPUASegmentor', 'VFMEncoder',
           'build_vfm_encoder']
