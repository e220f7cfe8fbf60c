"""Write a tiny Pascal-VOC-layout dataset for smoke tests and demos (no download, no network).

Layout (what ``PascalVOCDataset`` / ``GPUAPascalVOC20Dataset`` configs read)::

    OUT/JPEGImages/toy_0000.jpg ...                 RGB images, H x W = --size
    OUT/SegmentationClass/toy_0000.png ...          palette PNG, labels 0..20, 255 on borders
    OUT/ImageSets/Segmentation/val.txt              one image id per line

Images are scikit-image's bundled sample photos (read straight from its package data folder,
never via its downloader) resized to --size, or synthetic shapes when those are unavailable or
``--source shapes`` is given.  Labels are coarse: a centred ellipse with a plausible VOC class
for the photo (astronaut -> person, chelsea -> cat, ...) plus random boxes; object outlines get
a VOC-style 255 "void" border.  They exist to exercise the pipeline and metric, not to be right.

The dataset is written into a temporary sibling folder and renamed into place, so OUT is either
absent or complete.

Usage: python tools/make_toy_dataset.py OUT [--n 4] [--size 96 128] [--seed 0]
"""
import argparse
import os
import os.path as osp
import sys

import numpy as np
from PIL import Image

from gpua_mmseg.utils.atomic import atomic_directory

# (file in skimage's data folder, VOC class id of its main object)
SAMPLE_IMAGES = [
    ('astronaut.png', 15),        # person
    ('chelsea.png', 8),           # cat
    ('motorcycle_left.png', 14),  # motorbike
    ('coffee.png', 11),           # diningtable (a cup on a table, close enough for a toy)
    ('rocket.jpg', 1),            # aeroplane
    ('color.png', 9),             # chair (arbitrary)
]


def voc_palette():
    """The standard 256-entry VOC colour map as a flat list of 768 ints."""
    pal = np.zeros((256, 3), dtype=np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal.reshape(-1).tolist()


def _skimage_dir():
    try:
        import skimage.data
    except ImportError:
        return None
    return getattr(skimage.data, 'data_dir', None)


def _load_sample(index, size_hw):
    """RGB uint8 [H, W, 3] of bundled sample ``index`` resized to size_hw, or None."""
    data_dir = _skimage_dir()
    if data_dir is None:
        return None, None
    name, cls = SAMPLE_IMAGES[index % len(SAMPLE_IMAGES)]
    path = osp.join(data_dir, name)
    if not osp.isfile(path):
        return None, None
    img = Image.open(path).convert('RGB').resize((size_hw[1], size_hw[0]), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8), cls


def _label_map(rng, size_hw, main_cls):
    """Labels [H, W] uint8: background 0, a centred ellipse of main_cls, 1-2 random boxes."""
    h, w = size_hw
    lab = np.zeros((h, w), dtype=np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = h / 2 + rng.uniform(-0.1, 0.1) * h, w / 2 + rng.uniform(-0.1, 0.1) * w
    ry, rx = rng.uniform(0.2, 0.35) * h, rng.uniform(0.2, 0.35) * w
    lab[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = main_cls
    for _ in range(rng.integers(1, 3)):
        bh, bw = int(rng.uniform(0.1, 0.25) * h), int(rng.uniform(0.1, 0.25) * w)
        y0, x0 = rng.integers(0, h - bh), rng.integers(0, w - bw)
        lab[y0:y0 + bh, x0:x0 + bw] = rng.integers(1, 21)
    return lab


def _add_void_border(lab, width=1):
    """Set pixels within ``width`` of a label change to 255, as VOC annotators did."""
    edge = np.zeros(lab.shape, dtype=bool)
    edge[:-1, :] |= lab[:-1, :] != lab[1:, :]
    edge[1:, :] |= lab[1:, :] != lab[:-1, :]
    edge[:, :-1] |= lab[:, :-1] != lab[:, 1:]
    edge[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    for _ in range(width - 1):
        grown = edge.copy()
        grown[:-1] |= edge[1:]
        grown[1:] |= edge[:-1]
        grown[:, :-1] |= edge[:, 1:]
        grown[:, 1:] |= edge[:, :-1]
        edge = grown
    out = lab.copy()
    out[edge] = 255
    return out


def _synthetic_image(rng, lab):
    """RGB uint8 image whose colours follow the labels (plus noise), so shapes are visible."""
    colours = rng.integers(30, 226, size=(256, 3))
    img = colours[lab].astype(np.float32) + rng.normal(0, 12, size=lab.shape + (3,))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_toy_dataset(out, n=4, size=(96, 128), seed=0, source='auto', overwrite=False):
    """Write the toy dataset to ``out`` (see module docstring); returns the absolute path.

    Args:
        out: target folder; must not exist unless ``overwrite``.
        n: number of images (>= 1).
        size: (H, W) in pixels, each >= 16.
        seed: RNG seed (same seed -> identical files).
        source: 'auto' (bundled photos, shapes as fallback), 'skimage' or 'shapes'.
    """
    out = osp.abspath(out)
    if n < 1:
        raise ValueError(f'--n must be >= 1, got {n}')
    if len(size) != 2 or min(size) < 16:
        raise ValueError(f'--size must be two integers H W, each >= 16, got {size}')
    if source not in ('auto', 'skimage', 'shapes'):
        raise ValueError(f"source must be 'auto', 'skimage' or 'shapes', got {source!r}")
    if osp.exists(out) and not overwrite:
        raise ValueError(f'{out} already exists; remove it or pass --overwrite')
    rng = np.random.default_rng(seed)
    palette = voc_palette()

    def write(tmp):
        for sub in ('JPEGImages', 'SegmentationClass', osp.join('ImageSets', 'Segmentation')):
            os.makedirs(osp.join(tmp, sub))
        ids = []
        for i in range(n):
            img, cls = (None, None) if source == 'shapes' else _load_sample(i, size)
            if img is None and source == 'skimage':
                raise ValueError('scikit-image sample images are not available; use '
                                 '--source shapes')
            lab = _label_map(rng, size, cls if cls is not None else int(rng.integers(1, 21)))
            if img is None:
                img = _synthetic_image(rng, lab)
            lab = _add_void_border(lab, width=2)
            key = f'toy_{i:04d}'
            Image.fromarray(img).save(osp.join(tmp, 'JPEGImages', key + '.jpg'), quality=95)
            mask = Image.fromarray(lab, mode='P')
            mask.putpalette(palette)
            mask.save(osp.join(tmp, 'SegmentationClass', key + '.png'))
            ids.append(key)
        with open(osp.join(tmp, 'ImageSets', 'Segmentation', 'val.txt'), 'w') as f:
            f.write('\n'.join(ids) + '\n')
    # complete or absent, with the folder mode the umask gives (mkdtemp alone leaves 0700)
    atomic_directory(out, write, overwrite=overwrite)
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('out', help='output folder (must not exist unless --overwrite)')
    p.add_argument('--n', type=int, default=4, help='number of images (default 4)')
    p.add_argument('--size', type=int, nargs=2, default=(96, 128), metavar=('H', 'W'),
                   help='image height and width in pixels (default 96 128)')
    p.add_argument('--seed', type=int, default=0, help='RNG seed (default 0)')
    p.add_argument('--source', choices=('auto', 'skimage', 'shapes'), default='auto',
                   help='image source (default auto: bundled photos, else shapes)')
    p.add_argument('--overwrite', action='store_true', help='replace OUT if it exists')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        out = make_toy_dataset(args.out, n=args.n, size=tuple(args.size), seed=args.seed,
                               source=args.source, overwrite=args.overwrite)
    except ValueError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(f'wrote {args.n} images to {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
