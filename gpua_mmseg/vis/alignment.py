"""Before / after plot of alignment maps (matplotlib, Agg backend; imported on demand, not by
``gpua_mmseg.vis``).  The fit's own diagnostics PNG is :func:`gpua_mmseg.fitting.plot_diagnostics`."""
from typing import Dict

import torch

from ..alignment._checks import l2n
from ..utils.atomic import atomic_write

__all__ = ['plot_before_after']


def _pca_basis(X: torch.Tensor, k: int = 2) -> torch.Tensor:
    Xc = X - X.mean(0)
    _, _, Vh = torch.linalg.svd(Xc.double(), full_matrices=False)
    return Vh[:k].T.float()


def plot_before_after(vfm: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor,
                      maps: Dict[str, torch.Tensor], path: str, title: str = '',
                      n_show: int = 6) -> None:
    """One panel per map: ``normalise(normalise(vfm) @ W)`` [n, dc] and the prototypes [K, dc],
    projected on the first two principal axes of the ``n_show`` most frequent classes'
    prototypes (shared by all panels).  Points of those classes are coloured by label; their
    prototypes are large stars of the same colour, the other prototypes small grey stars."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    T = l2n(prototypes.float())
    shown = torch.bincount(labels.long(), minlength=T.shape[0]).argsort(descending=True)[:n_show]
    B = _pca_basis(T[shown])
    t2 = (T @ B).numpy()
    cmap = plt.get_cmap('tab10')
    colour = {int(k): cmap(i % 10) for i, k in enumerate(shown)}
    keep = torch.isin(labels.long(), shown)
    fig, axes = plt.subplots(1, len(maps), figsize=(5 * len(maps), 5), squeeze=False)
    for ax, (name, W) in zip(axes[0], maps.items()):
        u2 = (l2n(l2n(vfm[keep].float()) @ W.float()) @ B).numpy()
        ax.scatter(u2[:, 0], u2[:, 1], c=[colour[int(i)] for i in labels[keep]], s=6,
                   alpha=0.5, linewidths=0)
        others = [k for k in range(len(t2)) if k not in colour]
        ax.scatter(t2[others, 0], t2[others, 1], c='lightgrey', marker='*', s=60)
        ks = list(colour)
        ax.scatter(t2[ks, 0], t2[ks, 1], c=[colour[k] for k in ks], marker='*', s=380,
                   edgecolors='black', linewidths=1.0)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format='png'))
    plt.close(fig)
