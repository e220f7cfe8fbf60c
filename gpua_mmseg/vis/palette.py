"""Deterministic class colours: distinct, stable across runs, independent of the vocabulary size.

Class ``i`` always gets colour ``i`` (so the same index keeps its colour when classes are
appended).  Colours come from the bit-interleaving scheme popularised by the PASCAL VOC
devkit (index bits spread over the high bits of R, G, B), with index 0 moved off pure black so
that a swatch of class 0 stays visible on a dark legend background.
"""
from typing import List, Tuple

import numpy as np

__all__ = ['class_palette', 'BACKGROUND_NAMES']

# Classes with these names are drawn dark grey: the eye should go to the objects.
from ..vocabulary import BACKGROUND_NAMES  # noqa: E402  (one list: also the threshold fallback)


def _bit_palette(n: int) -> np.ndarray:
    out = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i + 1, 0, 0, 0  # +1: index 0 is not black
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out[i] = (r, g, b)
    return out


def class_palette(n: int, names: List[str] = None) -> List[Tuple[int, int, int]]:
    """``n`` RGB colours (0..255 ints); a class named like background (see
    :data:`BACKGROUND_NAMES`) gets dark grey ``(64, 64, 64)``.

    Raises:
        ValueError: ``n < 1`` or ``names`` has a different length.
    """
    if n < 1:
        raise ValueError(f'a palette needs at least one class, got n={n}')
    if names is not None and len(names) != n:
        raise ValueError(f'{len(names)} names for a palette of {n} classes')
    pal = [tuple(int(v) for v in c) for c in _bit_palette(n)]
    if names is not None:
        pal = [(64, 64, 64) if str(nm).strip().lower() in BACKGROUND_NAMES else c
               for c, nm in zip(pal, names)]
    return pal
