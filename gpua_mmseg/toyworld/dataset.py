"""Writing toy-world datasets in MMSegmentation's Pascal VOC layout.

Layout (read by ``configs/toyworld/_base_/toyworld_dataset.py``)::

    OUT/JPEGImages/<split>_0000.png          RGB images (PNG: JPEG would smear the 2-px textures)
    OUT/SegmentationClass/<split>_0000.png   palette PNG, class index per pixel (0..7, no void)
    OUT/ImageSets/Segmentation/<split>.txt   one image id per line
    OUT/class_names.txt                      the vocabulary (one class per line, index = label)
    OUT/meta.json                            seed, size, counts, class pixel frequencies

Split ``k`` (in the order given) of world ``seed`` holds scenes ``seed``/``(k + 1) * 1_000_000 + i``,
so splits never share a scene and adding images to one split changes no other.
The dataset is written into a temporary sibling folder and renamed into place: OUT is either
absent or complete.
"""
import json
import os
import os.path as osp
from typing import Dict, Sequence, Tuple

import numpy as np
from PIL import Image

from ..utils.atomic import atomic_directory
from .scenes import CLASSES, make_scene

__all__ = ['write_dataset', 'label_palette', 'split_scene_index']


def label_palette(n: int = len(CLASSES)) -> np.ndarray:
    """[n, 3] uint8 colours of the label PNGs and overlays (readable, fixed)."""
    base = np.array([[220, 200, 120], [60, 160, 60], [230, 60, 60], [60, 90, 230],
                     [240, 160, 30], [170, 60, 200], [40, 200, 200], [250, 250, 250]],
                    dtype=np.uint8)
    return base[:n]


def split_scene_index(split_pos: int, i: int) -> int:
    """Scene index of image ``i`` in the ``split_pos``-th split."""
    return (split_pos + 1) * 1_000_000 + i


def write_dataset(out: str, seed: int, splits: Sequence[Tuple[str, int]] = (('val', 100),),
                  size: int = 64, overwrite: bool = False) -> Dict:
    """Write the dataset -> meta dict (also saved as ``meta.json``).

    Args:
        out: dataset root to create.
        seed: world seed (the training world is ``train.TRAIN_DATA_SEED``; use another).
        splits: ``(name, n_images)`` pairs, e.g. ``(('fit', 200), ('val', 100))``.
        size: image side in pixels (multiple of 8 keeps patches aligned with the toy encoders).

    Raises:
        FileExistsError: ``out`` exists and ``overwrite`` is False.
        ValueError: bad split names / sizes.
    """
    out = osp.abspath(out)
    if osp.exists(out) and not overwrite:
        raise FileExistsError(f'{out} already exists; remove it or pass --overwrite')
    names = [s for s, _ in splits]
    if not splits or len(set(names)) != len(names) or any(
            not s or not s.replace('_', '').isalnum() or int(n) < 1 for s, n in splits):
        raise ValueError(f'splits must be distinct alphanumeric names with >= 1 image each, got '
                         f'{list(splits)}')
    if int(size) < 16:
        raise ValueError(f'size must be >= 16 pixels, got {size}')
    meta = {}

    def write(tmp):
        for d in ('JPEGImages', 'SegmentationClass', 'ImageSets/Segmentation'):
            os.makedirs(osp.join(tmp, d))
        pal = label_palette().reshape(-1).tolist()
        pal += [0] * (768 - len(pal))
        counts = np.zeros(len(CLASSES), dtype=np.int64)
        split_counts = {}
        for k, (name, n) in enumerate(splits):
            ids = []
            for i in range(int(n)):
                img, lab, _ = make_scene(seed, split_scene_index(k, i), size)
                iid = f'{name}_{i:04d}'
                Image.fromarray(img).save(osp.join(tmp, 'JPEGImages', iid + '.png'))
                p = Image.fromarray(lab, mode='P')
                p.putpalette(pal)
                p.save(osp.join(tmp, 'SegmentationClass', iid + '.png'))
                counts += np.bincount(lab.reshape(-1), minlength=len(CLASSES))
                ids.append(iid)
            with open(osp.join(tmp, 'ImageSets', 'Segmentation', name + '.txt'), 'w') as f:
                f.write('\n'.join(ids) + '\n')
            split_counts[name] = int(n)
        with open(osp.join(tmp, 'class_names.txt'), 'w') as f:
            f.write('\n'.join(CLASSES) + '\n')
        meta.update(world='gpua_mmseg toy world', seed=int(seed), size=int(size),
                    splits=split_counts, classes=list(CLASSES),
                    pixel_frequency=(counts / counts.sum()).round(6).tolist())
        with open(osp.join(tmp, 'meta.json'), 'w') as f:
            json.dump(meta, f, indent=2)

    atomic_directory(out, write, overwrite=overwrite)
    return meta
