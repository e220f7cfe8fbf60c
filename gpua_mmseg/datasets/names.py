"""Shipped class-name files (``gpua_mmseg/datasets/class_names/<key>.txt``, package data).

The eight benchmark vocabularies ship with the package so configs can say
``class_names='voc21'`` independently of the working directory.  Their format, and the parsing
of any other class-name file, is :mod:`gpua_mmseg.vocabulary`'s (one rule for files and strings);
this module only adds the label-space sizes.  Pure Python (no torch / mm* imports).
"""
import os
from typing import List, Union

from ..vocabulary import CLASS_NAMES_DIR, Vocabulary, class_names_path, list_class_name_keys

__all__ = ['CLASS_NAMES_DIR', 'NUM_CLASSES', 'class_names_path', 'list_class_name_keys',
           'load_class_names']

#: number of classes (= lines) per shipped key; the evaluation label space of each dataset.
NUM_CLASSES = {
    'voc21': 21, 'voc20': 20, 'context60': 60, 'context59': 59, 'coco_object': 81,
    'coco_stuff164k': 171, 'cityscapes': 19, 'ade20k': 150,
}


def load_class_names(key_or_path: Union[str, os.PathLike]) -> List[List[str]]:
    """A shipped key or a class-name file -> one list of synonyms per class index.

    Raises:
        ValueError: neither a shipped key nor an existing file (lists the keys), or a
            malformed file (see :mod:`gpua_mmseg.vocabulary`).
    """
    s = os.fspath(key_or_path)
    if s not in list_class_name_keys() and not os.path.isfile(os.path.expanduser(s)):
        raise ValueError(f'class names {s!r} are neither a shipped key {list_class_name_keys()} '
                         'nor an existing file')
    return Vocabulary.parse(s).classes
