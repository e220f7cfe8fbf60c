"""Convert COCO-Stuff-164k label maps into COCO-Object label maps (background + 80 things).

COCO-Object is the 81-class benchmark of the training-free OVSS literature (GroupViT, TCL,
SCLIP, ClearCLIP, NACLIP, ProxyCLIP, SC-CLIP): every COCO-Stuff pixel keeps its thing class
(1..80, COCO's usual thing order) and every stuff pixel becomes background (0).

Input, under ``COCO_STUFF_ROOT/annotations/<split>/`` (MMSeg's COCO-Stuff-164k layout), either

* ``raw``:      the official ``stuffthingmaps_trainval2017`` PNGs ``<id>.png`` — 0-based COCO ids:
                things 0..90 (11 ids unused), stuff 91..181, 255 unlabeled; or
* ``trainids``: MMSeg's converted ``<id>_labelTrainIds.png`` — contiguous 0..170, things 0..79,
                stuff 80..170, 255 unlabeled.

``auto`` (default) uses raw files when a split has any, else trainids.  Both give identical
output.  Output: ``OUT/annotations/<split>/<id>_instanceTrainIds.png`` (uint8, mode L), read by
``GPUACOCOObjectDataset``; ``OUT`` defaults to ``COCO_STUFF_ROOT`` (written beside the inputs).
When OUT differs and has no ``images`` folder, ``OUT/images`` is symlinked to the input images.

Unlabeled pixels (255): the published COCO-Object converters map them to background **as well**
(their lookup sends every id > 90, including 255, to 0), and all reported COCO-Object numbers
use that.  ``--unlabeled background`` (default) reproduces it; ``--unlabeled ignore`` keeps 255
so unlabeled pixels are excluded from the metric (not comparable with published numbers).

Every file is written to a temporary name in its folder and renamed into place, so an
interrupted run leaves no truncated PNG.  Existing outputs are skipped unless --overwrite.

Usage: python tools/convert_coco_object.py data/coco_stuff164k [-o OUT] [--splits val2017]
"""
import argparse
import os
import os.path as osp
import sys
from functools import partial
from multiprocessing import Pool

import numpy as np
from PIL import Image

#: 0-based COCO ids <= 90 with no category (COCO's 91 thing ids minus the 80 used ones).
UNUSED_THING_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
RAW_THING_IDS = tuple(i for i in range(91) if i not in UNUSED_THING_IDS)
assert len(RAW_THING_IDS) == 80
OUT_SUFFIX = '_instanceTrainIds.png'
TRAINIDS_SUFFIX = '_labelTrainIds.png'


def build_lut(source, unlabeled='background'):
    """uint8 lookup table [256] from input label to COCO-Object label.

    Labels that cannot occur in a valid input (unused ids, > 181 / > 170) map to 255 and are
    reported by :func:`convert_mask` as an error rather than silently relabelled.
    """
    if unlabeled not in ('background', 'ignore'):
        raise ValueError(f"unlabeled must be 'background' or 'ignore', got {unlabeled!r}")
    lut = np.full(256, 255, dtype=np.uint8)
    if source == 'raw':
        for obj_id, raw_id in enumerate(RAW_THING_IDS, start=1):
            lut[raw_id] = obj_id
        lut[91:182] = 0
    elif source == 'trainids':
        lut[0:80] = np.arange(1, 81)
        lut[80:171] = 0
    else:
        raise ValueError(f"source must be 'raw' or 'trainids', got {source!r}")
    lut[255] = 0 if unlabeled == 'background' else 255
    return lut


def _valid_inputs(source):
    valid = np.zeros(256, dtype=bool)
    if source == 'raw':
        valid[list(RAW_THING_IDS)] = True
        valid[91:182] = True
    else:
        valid[0:171] = True
    valid[255] = True
    return valid


def convert_mask(mask, source, unlabeled='background', name='<array>'):
    """Map a COCO-Stuff label map [H, W] (uint8) to COCO-Object labels [H, W] uint8 in
    {0..80} plus 255 (only with ``unlabeled='ignore'``).

    Raises:
        ValueError: not a 2-D integer map, or values that cannot occur in a ``source`` map
            (usually the wrong ``--source``).
    """
    mask = np.asarray(mask)
    if mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f'{name}: expected a 2-D integer label map, got shape {mask.shape} '
                         f'dtype {mask.dtype} (is it a colour PNG rather than a label map?)')
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise ValueError(f'{name}: labels outside 0..255')
    mask = mask.astype(np.uint8)
    bad = ~_valid_inputs(source)[mask]
    if bad.any():
        vals = np.unique(mask[bad])[:10].tolist()
        raise ValueError(f'{name}: labels {vals} cannot occur in a {source!r} COCO-Stuff map; '
                         'check --source (raw = official stuffthingmaps, trainids = MMSeg '
                         '*_labelTrainIds.png)')
    return build_lut(source, unlabeled)[mask]


def _atomic_save_png(arr, path):
    from gpua_mmseg.utils.atomic import atomic_write
    atomic_write(path, lambda tmp: Image.fromarray(arr, mode='L').save(tmp, format='PNG'))


def list_inputs(ann_dir, source='auto'):
    """(source, sorted [(input path, image id)]) for one split folder."""
    names = sorted(os.listdir(ann_dir))
    raw = [n for n in names if n.endswith('.png') and 'TrainIds' not in n]
    tid = [n for n in names if n.endswith(TRAINIDS_SUFFIX)]
    if source == 'auto':
        source = 'raw' if raw else 'trainids'
    files = raw if source == 'raw' else tid
    suffix = '.png' if source == 'raw' else TRAINIDS_SUFFIX
    return source, [(osp.join(ann_dir, n), n[:-len(suffix)]) for n in files]


def _convert_one(item, out_dir, source, unlabeled, overwrite):
    src, image_id = item
    dst = osp.join(out_dir, image_id + OUT_SUFFIX)
    if not overwrite and osp.exists(dst):
        return 0
    with Image.open(src) as im:
        arr = np.array(im)
    _atomic_save_png(convert_mask(arr, source, unlabeled, name=src), dst)
    return 1


def convert(root, out=None, splits=('val2017',), source='auto', unlabeled='background',
            nproc=1, overwrite=False, log=print):
    """Convert the given splits; returns {split: number of files written}.

    Raises:
        ValueError: missing root / split folder, or a split without input label maps.
    """
    root = osp.abspath(root)
    out = osp.abspath(out) if out else root
    if not osp.isdir(osp.join(root, 'annotations')):
        raise ValueError(f'{root} has no annotations/ folder; pass the COCO-Stuff-164k root '
                         '(the folder with images/ and annotations/, e.g. data/coco_stuff164k)')
    if source not in ('auto', 'raw', 'trainids'):
        raise ValueError(f"--source must be auto, raw or trainids, got {source!r}")
    build_lut('raw', unlabeled)  # validates ``unlabeled`` before any work
    written = {}
    for split in splits:
        ann_dir = osp.join(root, 'annotations', split)
        if not osp.isdir(ann_dir):
            raise ValueError(f'split folder {ann_dir} does not exist (available: '
                             f'{sorted(os.listdir(osp.join(root, "annotations")))})')
        split_source, items = list_inputs(ann_dir, source)
        if not items:
            raise ValueError(f'no {split_source} COCO-Stuff label maps in {ann_dir}')
        out_dir = osp.join(out, 'annotations', split)
        os.makedirs(out_dir, exist_ok=True)
        job = partial(_convert_one, out_dir=out_dir, source=split_source,
                      unlabeled=unlabeled, overwrite=overwrite)
        if nproc > 1:
            with Pool(nproc) as pool:
                done = sum(pool.imap_unordered(job, items, chunksize=64))
        else:
            done = sum(job(it) for it in items)
        written[split] = done
        log(f'{split}: {len(items)} {split_source} maps, wrote {done}, skipped '
            f'{len(items) - done} existing' + ('' if overwrite else ' (use --overwrite)')
            + f' -> {out_dir}')
    images = osp.join(root, 'images')
    if out != root and osp.isdir(images) and not osp.exists(osp.join(out, 'images')):
        os.symlink(images, osp.join(out, 'images'))
        log(f'linked {osp.join(out, "images")} -> {images}')
    return written


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('coco_stuff_root', help='COCO-Stuff-164k root (with annotations/<split>/)')
    p.add_argument('-o', '--out', default=None, help='output root (default: the input root)')
    p.add_argument('--splits', nargs='+', default=['val2017'],
                   help='splits to convert (default: val2017; train2017 is not needed for '
                        'the training-free benchmark)')
    p.add_argument('--source', choices=('auto', 'raw', 'trainids'), default='auto')
    p.add_argument('--unlabeled', choices=('background', 'ignore'), default='background',
                   help='where COCO-Stuff unlabeled (255) pixels go (default: background, the '
                        'published protocol)')
    p.add_argument('--nproc', type=int, default=1, help='worker processes (default 1)')
    p.add_argument('--overwrite', action='store_true', help='rewrite existing outputs')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        convert(args.coco_stuff_root, args.out, args.splits, args.source, args.unlabeled,
                args.nproc, args.overwrite)
    except ValueError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
