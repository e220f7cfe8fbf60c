"""High-level Python API: :class:`OpenVocabSegmenter` (one image / a folder, runtime vocabulary).

Attributes load lazily (PEP 562) so that ``import gpua_mmseg.apis`` stays light: torch, open_clip
and mmseg are imported only when a segmenter is built, after the weights were found.
"""
import importlib

_EXPORTS = {
    'OpenVocabSegmenter': 'segmenter', 'SegResult': 'segmenter', 'ManyReport': 'segmenter',
    'list_images': 'io', 'load_image': 'io',
    'Vocabulary': '..vocabulary',
    'resolve_config': 'configs', 'list_config_names': 'configs', 'preflight_weights': 'configs',
    'atomic_save': 'io', 'label_map_image': 'io',
    'fit_alignment_on_images': 'fit', 'default_alignment_path': 'fit',
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        mod = _EXPORTS[name]
        return getattr(importlib.import_module(mod if mod.startswith('.') else f'.{mod}',
                                               __name__), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
    return sorted(list(globals()) + __all__)
