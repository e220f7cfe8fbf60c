"""Offline toy-world demo: generate scenes, fit GPUA on unlabelled ones, segment the others with
the trained toy encoders, and write ``image | ground truth | prediction`` panels.

Runs through the public CLIs (tools/fit_alignment.py, tools/test.py --out) on the shipped
weights; nothing touches the network.
"""
import os
import os.path as osp
from typing import Dict, Optional

import numpy as np
from PIL import Image, ImageDraw

from .dataset import label_palette, write_dataset
from .evaluate import config_path, run_fit, run_test
from .scenes import CLASSES

__all__ = ['run_demo', 'panel']


def panel(image: np.ndarray, gt: np.ndarray, pred: np.ndarray, scale: int = 4,
          title: str = '') -> Image.Image:
    """``[image | ground truth | prediction]`` (nearest-neighbour upscaled) with a legend row."""
    pal = label_palette()
    tiles = [image, pal[gt], pal[np.clip(pred, 0, len(CLASSES) - 1)]]
    h, w = image.shape[:2]
    strip = np.concatenate([np.pad(t, ((0, 0), (0, 2), (0, 0)), constant_values=255)
                            for t in tiles], 1)
    big = Image.fromarray(strip).resize((strip.shape[1] * scale, h * scale), Image.NEAREST)
    legend_h = 14 * ((len(CLASSES) + 3) // 4) + 18
    out = Image.new('RGB', (big.width, big.height + legend_h), 'white')
    out.paste(big, (0, 0))
    d = ImageDraw.Draw(out)
    d.text((4, big.height + 2), title or 'image | ground truth | prediction', fill='black')
    col_w = big.width // 4
    for c, name in enumerate(CLASSES):
        x, y = 4 + (c % 4) * col_w, big.height + 16 + 14 * (c // 4)
        d.rectangle([x, y + 1, x + 10, y + 11], fill=tuple(int(v) for v in pal[c]),
                    outline='black')
        d.text((x + 14, y), name, fill='black')
    return out


def run_demo(out: str, n: int = 8, seed: int = 3, n_fit: int = 200, method: str = 'gpua_sclip',
             fusion_weight: Optional[float] = None) -> Dict:
    """Write ``out/overlays/val_XXXX.png`` for ``n`` new scenes -> dict(miou, overlays, ...).

    ``out/data``: the generated dataset (fit split unlabelled for the method, val split);
    ``out/alignment.safetensors``: the fitted GPUA map; ``out/pred``: predicted label PNGs.
    """
    data = osp.join(out, 'data')
    write_dataset(data, seed, (('fit', n_fit), ('val', n)), overwrite=True)
    cfg = config_path(method)
    options = []
    if method.startswith('gpua'):
        art = run_fit(cfg, data, osp.join(out, 'alignment.safetensors'))
        options.append(f'model.decode_head.alignment_path={art}')
        if fusion_weight is not None:
            options.append(f'model.decode_head.fusion_weight={fusion_weight}')
    pred_dir = osp.join(out, 'pred')
    miou = run_test(cfg, data, osp.join(out, 'work_dir'), options + [], split='val',
                    extra_args=['--out', pred_dir])
    os.makedirs(osp.join(out, 'overlays'), exist_ok=True)
    paths = []
    for i in range(n):
        iid = f'val_{i:04d}'
        img = np.asarray(Image.open(osp.join(data, 'JPEGImages', iid + '.png')).convert('RGB'))
        gt = np.asarray(Image.open(osp.join(data, 'SegmentationClass', iid + '.png')))
        pred = np.asarray(Image.open(osp.join(pred_dir, iid + '.png')))
        acc = 100.0 * float((pred == gt).mean())
        p = osp.join(out, 'overlays', iid + '.png')
        panel(img, gt, pred, title=f'{iid}: image | truth | {method} ({acc:.0f}% px)').save(p)
        paths.append(p)
    return dict(miou=miou, overlays=paths, data=data, method=method)
