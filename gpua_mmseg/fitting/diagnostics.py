"""Fit diagnostics: 2-D projections before / after the map, hubness, as numbers and a PNG."""
import os.path as osp
from typing import Dict, Optional

import torch
import torch.nn.functional as F

from ..utils.atomic import atomic_write

__all__ = ['hubness_stats', 'alignment_diagnostics', 'plot_diagnostics']

Tensor = torch.Tensor


def k_occurrence(x: Tensor, prototypes: Tensor, k: int = 3) -> Tensor:
    """``[K]`` how many rows of ``x [n, d]`` have each prototype among their k nearest (cosine)."""
    sim = F.normalize(x.float(), dim=-1) @ F.normalize(prototypes.float(), dim=-1).T
    idx = sim.topk(min(k, sim.shape[1]), dim=1).indices
    return torch.bincount(idx.reshape(-1), minlength=prototypes.shape[0])


def hubness_stats(x: Tensor, prototypes: Tensor, k: int = 3) -> Dict[str, float]:
    """Skewness of the k-occurrence distribution (0 = no hubs) and the largest hub's share."""
    n_k = k_occurrence(x, prototypes, k).double()
    mu, sd = n_k.mean(), n_k.std(unbiased=False)
    skew = float(((n_k - mu) ** 3).mean() / sd.clamp_min(1e-12) ** 3)
    return dict(k=int(k), skew=skew, max_share=float(n_k.max() / n_k.sum().clamp_min(1)),
                unused_prototypes=int((n_k == 0).sum()))


def alignment_diagnostics(amap, vfm: Tensor, clip: Tensor, prototypes: Tensor, k: int = 3
                          ) -> Dict[str, Dict[str, float]]:
    """Numbers stored in the artifact: hubness and CLIP agreement of the mapped features.

    Args:
        amap: the fitted :class:`AlignmentMap`.
        vfm, clip: a sample of paired features ``[n, dv]``, ``[n, dc]``.
        prototypes: ``[K, dc]``.

    Returns:
        ``dict(before=hubness of CLIP features, after=hubness of mapped VFM features,
        agreement=share of rows whose nearest prototype is the same for both)``.
    """
    u = amap.transform(vfm.float())
    T = F.normalize(prototypes.float(), dim=-1)
    agree = float(((u @ T.T).argmax(1) == (F.normalize(clip.float(), dim=-1) @ T.T).argmax(1))
                  .float().mean())
    return dict(before=hubness_stats(clip, T, k), after=hubness_stats(u, T, k),
                agreement=dict(nearest_prototype=agree))


def plot_diagnostics(path: str, amap, vfm: Tensor, clip: Tensor, prototypes: Tensor,
                     k: int = 3, title: Optional[str] = None) -> None:
    """Write a PNG (atomically): PCA of CLIP features (before) and mapped VFM features (after)
    with the prototypes, in one shared 2-D basis, plus their k-occurrence histograms."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    T = F.normalize(prototypes.float(), dim=-1)
    before = F.normalize(clip.float(), dim=-1)
    after = amap.transform(vfm.float())
    joint = torch.cat([T, before, after])
    mean = joint.mean(0, keepdim=True)
    # basis from the prototypes plus both clouds so the two panels are comparable
    _, _, V = torch.linalg.svd(joint - mean, full_matrices=False)
    proj = lambda x: ((x - mean) @ V[:2].T).numpy()  # noqa: E731
    fig, axes = plt.subplots(2, 2, figsize=(10, 9))
    for ax, x, name in ((axes[0, 0], before, 'before: CLIP patch features'),
                        (axes[0, 1], after, 'after: VFM features mapped by W')):
        px, pt = proj(x), proj(T)
        ax.scatter(px[:, 0], px[:, 1], s=2, alpha=0.3, label='patches')
        ax.scatter(pt[:, 0], pt[:, 1], s=30, marker='*', c='red', label='prototypes')
        ax.set_title(name)
        ax.legend(loc='best', fontsize=8)
    for ax, x, name in ((axes[1, 0], before, 'before'), (axes[1, 1], after, 'after')):
        n_k = k_occurrence(x, T, k).numpy()
        st = hubness_stats(x, T, k)
        ax.hist(n_k, bins=min(30, max(5, len(n_k))))
        ax.set_xlabel(f'N_{k} (rows having the prototype among their {k} nearest)')
        ax.set_ylabel('prototypes')
        ax.set_title(f'hubness {name}: skew {st["skew"]:.2f}, top share {st["max_share"]:.2f}')
    if title:
        fig.suptitle(title)
    fig.tight_layout()

    def write(tmp):
        fig.savefig(tmp, format='png', dpi=80)
    try:
        atomic_write(osp.abspath(path), write)
    finally:
        plt.close(fig)
