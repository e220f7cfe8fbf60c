"""Nearest-class-mean probe of patch features (how well an encoder's geometry separates classes).

Labels are read here, so this is an *analysis* tool (reported in the manifest and docs), never
part of GPUA fitting.
"""
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .scenes import CLASSES, make_scene

__all__ = ['patch_labels', 'ncm_probe']


def patch_labels(labels: np.ndarray, patch: int) -> np.ndarray:
    """[H, W] pixel labels -> [H/p, W/p] majority label of each patch."""
    h, w = labels.shape[0] // patch, labels.shape[1] // patch
    blocks = labels[:h * patch, :w * patch].reshape(h, patch, w, patch).transpose(0, 2, 1, 3)
    blocks = blocks.reshape(h, w, -1)
    k = len(CLASSES)
    counts = (blocks[..., None] == np.arange(k)).sum(2)
    return counts.argmax(-1)


@torch.no_grad()
def ncm_probe(features_fn: Callable[[np.ndarray], torch.Tensor], seed: int = 7, n: int = 120,
              size: int = 64, patch: int = 8) -> float:
    """Mean per-class accuracy (%) of a nearest-class-mean classifier on L2-normalised patch
    features: class means from the first half of ``n`` scenes, tested on the second half.

    features_fn: uint8 images [B, S, S, 3] -> features [B, S/p, S/p, D].
    """
    imgs, labs = [], []
    for i in range(n):
        img, lab, _ = make_scene(seed, 5_000_000 + i, size)
        imgs.append(img)
        labs.append(patch_labels(lab, patch))
    feats = F.normalize(features_fn(np.stack(imgs)).float(), dim=-1)
    y = torch.from_numpy(np.stack(labs)).long()
    half = n // 2
    ftr, ytr = feats[:half].reshape(-1, feats.shape[-1]), y[:half].reshape(-1)
    fte, yte = feats[half:].reshape(-1, feats.shape[-1]), y[half:].reshape(-1)
    k = len(CLASSES)
    means = torch.stack([F.normalize(ftr[ytr == c].mean(0), dim=0) if (ytr == c).any()
                         else torch.zeros(ftr.shape[-1]) for c in range(k)])
    pred = (fte @ means.t()).argmax(1)
    accs = [float((pred[yte == c] == c).float().mean()) for c in range(k) if (yte == c).any()]
    return 100.0 * float(np.mean(accs))
