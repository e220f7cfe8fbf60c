"""Deterministic procedural scenes with pixel labels (the toy world's "photographs").

A scene is one or two background textures (``sand``: per-pixel speckle, ``grass``: short
vertical strokes) with 0-2 large shapes on top.  Every shape class has its own shape *and* its
own texture; colours are drawn at random per object and per rendering, so colour never tells a
class apart (that is what the two encoders must learn to ignore).

Geometry and appearance are separate: :func:`sample_layout` draws the geometry of scene
``index`` from ``numpy.random.default_rng([seed, index])``; :func:`render` paints a layout with
an appearance generator (colours, background noise).  The VFM's two views of one scene are two
renderings of the same layout with different appearance generators.

Pure numpy; no torch / mm* imports.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ['CLASSES', 'BACKGROUND_CLASSES', 'SHAPE_CLASSES', 'sample_layout', 'render',
           'make_scene', 'caption', 'class_presence']

#: class index -> name; this order is the label space of every toy dataset and of the
#: class-name file ``gpua_mmseg/toyworld/toyworld.txt``.
CLASSES: Tuple[str, ...] = ('sand', 'grass', 'circle', 'square', 'triangle', 'star', 'cross',
                            'moon')
BACKGROUND_CLASSES = (0, 1)
SHAPE_CLASSES = (2, 3, 4, 5, 6, 7)

# Texture period in pixels; shapes use it relative to the object's centre.
_PERIOD = 4


def sample_layout(seed: int, index: int, size: int = 64, max_objects: int = 2) -> Dict:
    """Geometry of scene ``index``: backgrounds, split line and objects (no colours).

    Returns:
        dict(size=int px, bg=(cls_a, cls_b), split=(nx, ny, offset) or None,
        objects=[dict(cls, cx, cy, r, angle)]), positions/radii in pixels, angle in radians.
    """
    rng = np.random.default_rng([int(seed), int(index), 0])
    bg_a = int(rng.integers(2))
    split = None
    bg_b = bg_a
    if rng.random() < 0.4:  # two background regions separated by a straight line
        bg_b = 1 - bg_a
        theta = rng.uniform(0, 2 * np.pi)
        split = (float(np.cos(theta)), float(np.sin(theta)), float(rng.uniform(-0.3, 0.3) * size))
    n_obj = min(int(rng.choice([0, 1, 1, 2, 2])), max_objects)
    classes = rng.choice(SHAPE_CLASSES, size=n_obj, replace=False)
    objects = []
    for c in classes:
        r = float(rng.uniform(0.17, 0.30) * size)
        for _ in range(20):  # keep objects apart so each stays visible
            cx, cy = rng.uniform(r * 0.8, size - r * 0.8, size=2)
            if all(np.hypot(cx - o['cx'], cy - o['cy']) > 0.8 * (r + o['r']) for o in objects):
                break
        objects.append(dict(cls=int(c), cx=float(cx), cy=float(cy), r=r,
                            angle=float(rng.uniform(0, 2 * np.pi))))
    return dict(size=int(size), bg=(bg_a, bg_b), split=split, objects=objects)


def _shape_mask(cls: int, x: np.ndarray, y: np.ndarray, r: float, angle: float) -> np.ndarray:
    """Boolean mask of shape ``cls`` for pixel offsets (x, y) from its centre (pixels)."""
    ca, sa = np.cos(angle), np.sin(angle)
    u, v = ca * x + sa * y, -sa * x + ca * y  # rotated coordinates
    rho, phi = np.hypot(x, y), np.arctan2(v, u)
    name = CLASSES[cls]
    if name == 'circle':
        return rho <= r
    if name == 'square':
        s = r * 0.85
        return (np.abs(u) <= s) & (np.abs(v) <= s)
    if name == 'triangle':
        # equilateral, circumradius r: inside all three edge half-planes
        inside = np.ones_like(u, dtype=bool)
        for k in range(3):
            a = angle + k * 2 * np.pi / 3
            inside &= (np.cos(a) * x + np.sin(a) * y) <= r / 2
        return inside
    if name == 'star':
        # five points: radius oscillates between 0.45 r and r with the polar angle
        rr = r * (0.45 + 0.55 * np.abs(np.cos(2.5 * phi)) ** 2)
        return rho <= rr
    if name == 'cross':
        w = r * 0.38
        return ((np.abs(u) <= w) & (np.abs(v) <= r)) | ((np.abs(v) <= w) & (np.abs(u) <= r))
    if name == 'moon':
        return (rho <= r) & (np.hypot(u - 0.45 * r, v) > 0.8 * r)
    raise ValueError(f'not a shape class: {cls}')


def _shape_texture(cls: int, x: np.ndarray, y: np.ndarray, rng) -> np.ndarray:
    """Texture in {0, 1} (which of the object's two colours) at offsets (x, y) from its centre."""
    name = CLASSES[cls]
    p = _PERIOD
    xi, yi = np.floor(x).astype(int), np.floor(y).astype(int)
    if name == 'circle':  # solid
        return np.zeros_like(xi)
    if name == 'square':  # checkerboard
        return ((xi // (p // 2) + yi // (p // 2)) % 2)
    if name == 'triangle':  # horizontal stripes
        return (yi // (p // 2)) % 2
    if name == 'star':  # dots on a grid
        return (((xi % p) < 2) & ((yi % p) < 2)).astype(int)
    if name == 'cross':  # diagonal stripes
        return ((xi + yi) // (p // 2)) % 2
    if name == 'moon':  # concentric rings
        return (np.floor(np.hypot(x, y)).astype(int) // (p // 2)) % 2
    raise ValueError(f'not a shape class: {cls}')


def _colour_pair(rng) -> Tuple[np.ndarray, np.ndarray]:
    """Two random RGB colours (floats 0..1) far enough apart that a texture stays visible."""
    while True:
        a, b = rng.uniform(0, 1, size=3), rng.uniform(0, 1, size=3)
        if np.abs(a - b).sum() > 0.9:
            return a, b


def _background(cls: int, size: int, rng, noise) -> np.ndarray:
    """[size, size, 3] float texture of background class ``cls``: colours from ``rng``, the
    speckle / strokes from ``noise`` (may be the same generator)."""
    a, b = _colour_pair(rng)
    rng = noise
    if CLASSES[cls] == 'sand':
        t = rng.random((size, size)) < 0.35  # speckle
    else:  # grass: short vertical strokes, 1 px wide, 3-7 px long
        t = np.zeros((size, size), dtype=bool)
        n = size * size // 6
        xs = rng.integers(0, size, n)
        ys = rng.integers(-6, size, n)
        ls = rng.integers(3, 8, n)
        for x0, y0, ln in zip(xs, ys, ls):
            t[max(y0, 0):max(y0 + ln, 0), x0] = True
    return np.where(t[..., None], b, a)


def render(layout: Dict, appearance_rng, offset: Tuple[int, int] = (0, 0),
           out_size: Optional[int] = None, noise_rng=None) -> Tuple[np.ndarray, np.ndarray]:
    """Paint ``layout`` -> (image [S, S, 3] uint8 RGB, labels [S, S] uint8 class indices).

    Args:
        layout: from :func:`sample_layout`.
        appearance_rng: ``numpy.random.Generator`` for colours and background noise.
        offset: (dy, dx) pixels; the window ``[dy:dy+S, dx:dx+S]`` of the layout is painted.
        out_size: window side S (default: the layout's size).
        noise_rng: separate generator for the background noise (default: ``appearance_rng``,
            drawn in the same order, so passing none reproduces the plain rendering).
    """
    noise = appearance_rng if noise_rng is None else noise_rng
    size = layout['size'] if out_size is None else int(out_size)
    dy, dx = offset
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    yy += dy + 0.5
    xx += dx + 0.5
    bg_a, bg_b = layout['bg']
    img = _background(bg_a, size, appearance_rng, noise)
    lab = np.full((size, size), bg_a, dtype=np.uint8)
    if layout['split'] is not None:
        nx, ny, off = layout['split']
        c = layout['size'] / 2
        side = (xx - c) * nx + (yy - c) * ny > off
        other = _background(bg_b, size, appearance_rng, noise)
        img = np.where(side[..., None], other, img)
        lab[side] = bg_b
    for o in layout['objects']:
        x, y = xx - o['cx'], yy - o['cy']
        m = _shape_mask(o['cls'], x, y, o['r'], o['angle'])
        a, b = _colour_pair(appearance_rng)
        tex = _shape_texture(o['cls'], x, y, appearance_rng)
        col = np.where(tex[..., None] == 1, b, a)
        img = np.where(m[..., None], col, img)
        lab[m] = o['cls']
    img = np.clip(np.round(img * 255), 0, 255).astype(np.uint8)
    return img, lab


def make_scene(seed: int, index: int, size: int = 64, view: int = 0
               ) -> Tuple[np.ndarray, np.ndarray, Dict]:
    """Scene ``index`` of world ``seed``, rendering ``view`` -> (image, labels, layout)."""
    layout = sample_layout(seed, index, size)
    img, lab = render(layout, np.random.default_rng([int(seed), int(index), 1 + int(view)]))
    return img, lab, layout


def class_presence(labels: np.ndarray, min_fraction: float = 0.02) -> List[int]:
    """Class indices covering at least ``min_fraction`` of the pixels, ascending."""
    counts = np.bincount(labels.reshape(-1), minlength=len(CLASSES))
    return [int(c) for c in np.nonzero(counts >= min_fraction * labels.size)[0]]


def caption(present: Sequence[int], rng=None) -> str:
    """Caption naming the present classes: ``'a photo of a star and a moon on sand and grass.'``

    Shapes first (in random order when ``rng`` is given), then the backgrounds.
    """
    shapes = [CLASSES[c] for c in present if c in SHAPE_CLASSES]
    bgs = [CLASSES[c] for c in present if c in BACKGROUND_CLASSES]
    if rng is not None:
        rng.shuffle(shapes)
        rng.shuffle(bgs)
    parts = ' and '.join(f'a {s}' for s in shapes)
    ground = ' and '.join(bgs)
    if parts and ground:
        return f'a photo of {parts} on {ground}.'
    if parts:
        return f'a photo of {parts}.'
    return f'a photo of {ground}.'
