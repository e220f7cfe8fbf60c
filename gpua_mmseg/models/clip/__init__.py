"""open_clip wrapper with a registry of last-block variants (vanilla, maskclip, sclip, clearclip,
naclip, scclip, proxyclip).  See ``encoder.py`` for the quick start with a tiny random model."""
from . import proxyclip as _proxyclip  # noqa: F401  (registers 'proxyclip')
from . import scclip as _scclip  # noqa: F401  (registers 'scclip')
from .encoder import CLIPEncoder, build_clip_encoder
from .loading import create_open_clip, read_state_dict, tiny_clip_model_cfg
from .variants import BlockContext, list_last_blocks, mode_needs_vfm, register_last_block

__all__ = ['CLIPEncoder', 'build_clip_encoder', 'create_open_clip', 'read_state_dict',
           'tiny_clip_model_cfg', 'BlockContext', 'list_last_blocks', 'mode_needs_vfm',
           'register_last_block']
