"""The model's vocabulary must describe the evaluated dataset's label space.

A config that inherits another dataset (e.g. MMSeg's ``ade20k.py``) but keeps the default
``class_names`` would score 21 VOC names as 150 ADE classes and report a meaningless mIoU without
any error.  :func:`check_class_names` compares the vocabulary with the dataset's
``METAINFO['classes']``: a different **count** is an error (class indices cannot line up), a
different **name** at some index a warning (synonyms and spellings differ legitimately:
``'aeroplane'`` vs ``'airplane'``, VOC's background as a list of stuff words).

:class:`GPUAClassNamesCheckHook` runs the check before every test / validation loop of MMEngine's
``Runner``; ``configs/_base_/default_runtime.py`` lists it in ``custom_hooks``, so
``tools/test.py``, ``tools/eval_all.py`` and MMSeg's own ``tools/test.py`` all get it.
"""
import re
import warnings
from typing import List, Optional, Sequence

from mmengine.hooks import Hook
from mmseg.registry import HOOKS

from ..vocabulary import BACKGROUND_NAMES, Vocabulary, VocabularyLike
from .names import NUM_CLASSES

__all__ = ['GPUAClassNamesCheckHook', 'check_class_names', 'name_matches']


def _squash(name: str) -> str:
    """'sky-other' -> 'sky', 'potted plant' / 'pottedplant' -> 'pottedplant'."""
    name = re.sub(r'-(other|stuff|merged)$', '', name.strip().lower())
    return re.sub(r'[^a-z0-9]', '', name)


def _words(name: str) -> List[str]:
    return sorted(w for w in re.split(r'[\s\-_]+', name.strip().lower())
                  if w not in ('other', 'stuff', ''))


def name_matches(synonyms: Sequence[str], dataset_name: str) -> bool:
    """Does one of ``synonyms`` name the dataset class ``dataset_name`` (modulo spelling)?

    A background-like dataset class (``'background'``...) matches any synonyms: OVSS
    vocabularies describe it by stuff words (``'sky, wall, tree, ...'``).
    """
    if dataset_name.strip().lower() in BACKGROUND_NAMES:
        return True
    return any(_squash(s) == _squash(dataset_name) or _words(s) == _words(dataset_name)
               for s in synonyms)


def check_class_names(vocabulary: VocabularyLike, dataset_classes: Sequence[str],
                      where: str = 'the dataset', what: str = 'model.class_names') -> List[str]:
    """Compare a vocabulary with a dataset's class list.

    Returns:
        The name mismatches as ``'index i: vocabulary [...] vs dataset 'x''`` (also warned).

    Raises:
        ValueError: different class counts (names both sides and the fix).
    """
    vocab = Vocabulary.parse(vocabulary)
    classes = [str(c) for c in dataset_classes]
    if len(vocab) != len(classes):
        same = [k for k, n in sorted(NUM_CLASSES.items()) if n == len(classes)]
        hint = (f" (the shipped vocabulary with {len(classes)} classes: "
                f"{', '.join(repr(k) for k in same)})" if same else '')
        raise ValueError(
            f'{what} ({vocab.source}) has {len(vocab)} classes but {where} has {len(classes)} '
            f"(METAINFO['classes'] starts {classes[:3]}); predictions would be scored against "
            f'the wrong classes. Set {what} to a vocabulary of the dataset{hint}, '
            'e.g. --cfg-options model.class_names=KEY_OR_FILE')
    bad = [f'index {i}: vocabulary {syns} vs dataset {name!r}'
           for i, (syns, name) in enumerate(zip(vocab.classes, classes))
           if not name_matches(syns, name)]
    if bad:
        warnings.warn(f'{what} ({vocab.source}) and {where} name {len(bad)} class(es) '
                      f'differently: {"; ".join(bad[:5])}{" ..." if len(bad) > 5 else ""}. '
                      'If these are not synonyms, the vocabulary does not fit the dataset.',
                      stacklevel=2)
    return bad


def _find_vocabulary(model) -> Optional[Vocabulary]:
    from mmengine.model import is_model_wrapper
    if is_model_wrapper(model):
        model = model.module
    for obj in (model, getattr(model, 'decode_head', None), getattr(model, 'backbone', None)):
        vocab = getattr(obj, 'vocabulary', None)
        if isinstance(vocab, Vocabulary):
            return vocab
        vocab = getattr(getattr(obj, 'text_classifier', None), 'vocabulary', None)
        if isinstance(vocab, Vocabulary):
            return vocab
    return None


@HOOKS.register_module()
class GPUAClassNamesCheckHook(Hook):
    """Before test / validation: the model's vocabulary against the dataloader's dataset.

    Models without a gpua_mmseg vocabulary (other plugins' segmentors) and datasets without
    ``METAINFO['classes']`` are skipped.

    Raises:
        ValueError: the class counts differ (see :func:`check_class_names`).
    """

    priority = 'VERY_HIGH'

    def _check(self, runner, loop, phase: str) -> None:
        vocab = _find_vocabulary(runner.model)
        dataset = getattr(getattr(loop, 'dataloader', None), 'dataset', None)
        classes = (getattr(dataset, 'metainfo', None) or {}).get('classes')
        if vocab is None or not classes:
            return
        check_class_names(vocab, classes, f'the {phase} dataset {type(dataset).__name__}')

    def before_test(self, runner) -> None:
        self._check(runner, runner.test_loop, 'test')

    def before_val(self, runner) -> None:
        self._check(runner, runner.val_loop, 'val')
