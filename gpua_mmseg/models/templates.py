"""Prompt templates for the text classifier.

``'openai_imagenet'``: the 80 ImageNet prompt templates published with OpenAI's CLIP, taken from
``open_clip`` (``open_clip.zero_shot_metadata.OPENAI_IMAGENET_TEMPLATES``, functions of the class
name) and turned into ``str.format`` strings with one ``{}`` for the class name.
"""
from typing import Callable, Dict, List, Sequence, Tuple, Union

__all__ = ['TEMPLATE_SETS', 'OPENAI_IMAGENET_TEMPLATES', 'resolve_templates']


def _open_clip_set(attr: str) -> Callable[[], Tuple[str, ...]]:
    def load() -> Tuple[str, ...]:
        from open_clip import zero_shot_metadata
        return tuple(t('{}') for t in getattr(zero_shot_metadata, attr))
    return load


#: Named template sets -> loader of their format strings (open_clip is imported on first use).
TEMPLATE_SETS: Dict[str, Callable[[], Tuple[str, ...]]] = {
    'openai_imagenet': _open_clip_set('OPENAI_IMAGENET_TEMPLATES'),
    'simple_imagenet': _open_clip_set('SIMPLE_IMAGENET_TEMPLATES'),
}


def __getattr__(name):
    if name == 'OPENAI_IMAGENET_TEMPLATES':  # lazily, so that importing stays light
        return TEMPLATE_SETS['openai_imagenet']()
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def resolve_templates(templates: Union[str, Sequence[str]]) -> List[str]:
    """A template-set key (see ``TEMPLATE_SETS``) or an explicit list of ``'... {} ...'`` strings."""
    if isinstance(templates, str):
        if templates not in TEMPLATE_SETS:
            raise ValueError(f'unknown template set {templates!r}; known: {sorted(TEMPLATE_SETS)}, '
                             'or give a list of format strings such as ["a photo of a {}."]')
        return list(TEMPLATE_SETS[templates]())
    templates = list(templates)
    bad = [t for t in templates if not isinstance(t, str) or t.count('{}') != 1]
    if not templates or bad:
        raise ValueError(f'templates must be a non-empty list of strings with exactly one "{{}}" '
                         f'placeholder each; offending: {bad[:3]}')
    return templates
