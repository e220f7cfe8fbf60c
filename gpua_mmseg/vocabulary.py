"""The one vocabulary type of gpua_mmseg: parsing, canonical form, hash, background, queries.

Pure Python (no torch / mm* imports), so the alignment core, the tools and the tests can all use
it cheaply.  Every place that reads class names (configs' ``class_names``, the demo's
``--classes``, the API, the fit pipeline, artifacts) goes through :meth:`Vocabulary.parse`.

The text rule (identical for files and strings)
-----------------------------------------------
* ``;`` or a line break separates **classes**; the class index is the position;
* ``,`` separates the **synonyms** of one class (each synonym is its own text query; the class
  score is the max over them); the first synonym is the display name;
* white space around names is stripped; trailing white space / line breaks at the end of the
  text are ignored (files end with a newline);
* an empty class (``"cat;;dog"``, a blank line inside a file, a trailing ``;``) or an empty
  synonym (``"cat,,kitty"``) is an error naming the class, because it would silently shift
  every later class index; so is a synonym repeated within one class.

A name may appear in two classes (the shipped ``coco_object`` background words include
``bed``); its query then scores both, and ties go to the lower class index.

Example: ``"cat, kitty; sofa; background"`` -> classes ``[['cat', 'kitty'], ['sofa'],
['background']]``, queries ``['cat', 'kitty', 'sofa', 'background']``, query_to_class
``[0, 0, 1, 2]``, names ``['cat', 'sofa', 'background']``, background_index ``2``.

Sources accepted by :meth:`Vocabulary.parse`: a :class:`Vocabulary`; a shipped key
(``'voc21'``, see :func:`list_class_name_keys`); a path to a UTF-8 class-name file; a text in the
rule above; or a list whose items are a name (a string item follows the synonym rule, so
``'cat, kitty'`` is one class with two synonyms) or a list of synonyms.
"""
import hashlib
import json
import os
import os.path as osp
import re
import warnings
from typing import Iterator, List, Optional, Sequence, Tuple, Union

__all__ = ['Vocabulary', 'VocabularyLike', 'BACKGROUND_NAMES', 'CLASS_NAMES_DIR',
           'list_class_name_keys', 'class_names_path']

#: Synonyms that mark the threshold-fallback ("background") class.
BACKGROUND_NAMES = frozenset({'background', 'bg', 'other', 'others', 'void', 'unlabeled'})

#: Folder of the shipped class-name files (``<key>.txt``, package data).
CLASS_NAMES_DIR = osp.join(osp.dirname(osp.abspath(__file__)), 'datasets', 'class_names')

_CLASS_SEP = re.compile(r';|\r\n|\n|\r')
_RULE = '";" or a new line between classes, "," between the synonyms of one class'


def list_class_name_keys() -> List[str]:
    """Keys of the shipped class-name files, sorted (e.g. ``['ade20k', ..., 'voc21']``)."""
    if not osp.isdir(CLASS_NAMES_DIR):
        return []
    return sorted(f[:-4] for f in os.listdir(CLASS_NAMES_DIR) if f.endswith('.txt'))


def class_names_path(key: str) -> str:
    """Absolute path of the shipped class-name file for ``key`` (e.g. ``'voc21'``).

    Raises:
        ValueError: unknown key (the message lists the valid keys).
    """
    if isinstance(key, str) and os.sep not in key and key in list_class_name_keys():
        return osp.join(CLASS_NAMES_DIR, f'{key}.txt')
    raise ValueError(f'unknown class-name key {key!r}; shipped keys are '
                     f'{list_class_name_keys()} (or pass a path to a class-name file: {_RULE})')


def _split_synonyms(text: str, where: str) -> Tuple[str, ...]:
    syns = tuple(s.strip() for s in text.split(','))
    if not text.strip():
        raise ValueError(f'{where} is empty (two separators in a row, a blank line or a '
                         f'trailing ";"?); remove it ({_RULE})')
    if not all(syns):
        raise ValueError(f'{where} ({text.strip()!r}) has an empty synonym (",," or a '
                         f'trailing ","); remove it ({_RULE})')
    return syns


def _parse_text(text: str, source: str) -> Tuple[Tuple[str, ...], ...]:
    body = text.rstrip()
    if not body.strip():
        raise ValueError(f'the vocabulary {source} is empty; give classes like '
                         f'"cat, kitty; sofa; background" ({_RULE})')
    return tuple(_split_synonyms(item, f'class {i} of {source}')
                 for i, item in enumerate(_CLASS_SEP.split(body)))


def _looks_like_path(s: str) -> bool:
    return (os.sep in s or s.endswith('.txt')) and not _CLASS_SEP.search(s) and ',' not in s


class Vocabulary:
    """An immutable, validated vocabulary (see the module docstring for the text rule).

    Build it with :meth:`parse`.  Equality and hashing use the canonical nested form only
    (not where it was read from).

    Attributes:
        source: where it came from (file path, shipped key, ``'<string>'`` or ``'<list>'``),
            for messages only.
    """

    __slots__ = ('_classes', 'source')

    def __init__(self, classes: Sequence[Sequence[str]], source: str = '<list>'):
        canon = tuple(tuple(syns) for syns in classes)
        if not canon:
            raise ValueError(f'the vocabulary {source} has no classes')
        for i, syns in enumerate(canon):
            if not syns or not all(isinstance(s, str) and s and s == s.strip() for s in syns):
                raise ValueError(f'class {i} of {source} must be a non-empty list of stripped, '
                                 f'non-empty names, got {list(syns)!r}')
            low = [s.lower() for s in syns]
            dup = sorted({s for s in low if low.count(s) > 1})
            if dup:
                raise ValueError(f'class {i} of {source} lists the synonym(s) {dup} twice; '
                                 'give each once')
        object.__setattr__(self, '_classes', canon)
        object.__setattr__(self, 'source', source)

    def __setattr__(self, name, value):
        raise AttributeError('Vocabulary is immutable; build a new one with Vocabulary.parse')

    # ------------------------------------------------------------------ construction
    @classmethod
    def parse(cls, source: 'VocabularyLike') -> 'Vocabulary':
        """Any supported source -> :class:`Vocabulary` (see the module docstring).

        A string is, in this order: a shipped key, an existing file, else vocabulary text.

        Raises:
            ValueError: empty vocabulary, an empty class or synonym (the message names it),
                a malformed item, a class-name file that cannot be read.
            FileNotFoundError: a string that looks like a file path (``/`` or ``.txt``) but
                does not exist.
        """
        if isinstance(source, Vocabulary):
            return source
        if isinstance(source, os.PathLike):
            source = os.fspath(source)
        if isinstance(source, str):
            if not _CLASS_SEP.search(source) and ',' not in source:
                key = source.strip()
                if key in list_class_name_keys():
                    return cls._from_file(class_names_path(key), key)
                path = osp.expanduser(key)
                if osp.isfile(path):
                    return cls._from_file(path, path)
                if _looks_like_path(key):
                    raise FileNotFoundError(
                        f'class-name file {key!r} does not exist; give an existing file, a '
                        f'shipped key {list_class_name_keys()}, or the classes themselves '
                        f'({_RULE})')
                if re.fullmatch(r'[a-z]+[0-9_][a-z0-9_]*', key):
                    warnings.warn(f'{key!r} is neither a shipped class-name key '
                                  f'{list_class_name_keys()} nor a file; it is used as a '
                                  'vocabulary of one class named so', stacklevel=2)
            label = repr(source if len(source) <= 60 else source[:57] + '...')
            return cls(_parse_text(source, label), label)
        if isinstance(source, (bytes, bytearray)) or not hasattr(source, '__iter__'):
            raise ValueError(f'a vocabulary must be text ("cat, kitty; sofa"), a shipped key, a '
                             f'file path or a list of names, got {type(source).__name__} '
                             f'{source!r}')
        items = list(source)
        if not items:
            raise ValueError('the vocabulary (an empty list) has no classes; give classes like '
                             '["cat", ["sofa", "couch"], "background"]')
        classes = []
        for i, item in enumerate(items):
            where = f'class {i} of the list'
            if isinstance(item, str):
                if _CLASS_SEP.search(item):
                    raise ValueError(f'{where} ({item!r}) contains a class separator; give one '
                                     'class per list item (synonyms separated by ",")')
                classes.append(_split_synonyms(item, where))
            elif (isinstance(item, (list, tuple)) and item
                  and all(isinstance(s, str) for s in item)):
                syns = tuple(s.strip() for s in item)
                if not all(syns):
                    raise ValueError(f'{where} ({list(item)!r}) has an empty synonym; remove it')
                classes.append(syns)
            else:
                raise ValueError(f'{where}: expected a name or a non-empty list of synonym '
                                 f'strings, got {item!r}')
        return cls(classes, '<list>')

    @classmethod
    def _from_file(cls, path: str, label: str) -> 'Vocabulary':
        try:
            with open(path, encoding='utf-8') as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f'cannot read the class-name file {path}: {e}') from e
        return cls(_parse_text(text, f'file {path}'), label)

    # ------------------------------------------------------------------ views
    @property
    def classes(self) -> List[List[str]]:
        """Canonical nested form: one list of synonyms per class (a fresh copy)."""
        return [list(syns) for syns in self._classes]

    @property
    def queries(self) -> List[str]:
        """All synonyms in class order (the text queries), flat."""
        return [s for syns in self._classes for s in syns]

    @property
    def query_to_class(self) -> List[int]:
        """Class index of each query (same length as :attr:`queries`)."""
        return [c for c, syns in enumerate(self._classes) for _ in syns]

    @property
    def names(self) -> List[str]:
        """Display names: the first synonym of each class."""
        return [syns[0] for syns in self._classes]

    @property
    def hash(self) -> str:
        """16 hex characters of sha256 over the canonical nested form (JSON, UTF-8)."""
        blob = json.dumps(self.classes, ensure_ascii=False)
        return hashlib.sha256(blob.encode('utf-8')).hexdigest()[:16]

    @property
    def background_index(self) -> Optional[int]:
        """Index of the first class with a background-like synonym (``'background'`` ...)."""
        for i, syns in enumerate(self._classes):
            if any(s.lower() in BACKGROUND_NAMES for s in syns):
                return i
        return None

    def text(self) -> str:
        """The vocabulary in the text rule (``Vocabulary.parse(v.text()) == v``)."""
        return '; '.join(', '.join(syns) for syns in self._classes)

    # ------------------------------------------------------------------ protocol
    def __len__(self) -> int:
        return len(self._classes)

    def __iter__(self) -> Iterator[List[str]]:
        return iter(self.classes)

    def __getitem__(self, i: int) -> List[str]:
        return list(self._classes[i])

    def __eq__(self, other) -> bool:
        if isinstance(other, Vocabulary):
            return self._classes == other._classes
        if isinstance(other, (list, tuple)):
            try:
                return self._classes == Vocabulary.parse(other)._classes
            except ValueError:
                return False
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._classes)

    def __repr__(self) -> str:
        return f'Vocabulary({self.text()!r})'

    def __reduce__(self):
        return (Vocabulary, (self.classes, self.source))


VocabularyLike = Union[Vocabulary, str, os.PathLike, Sequence[Union[str, Sequence[str]]]]
