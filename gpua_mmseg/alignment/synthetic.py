"""Synthetic alignment problems with a known ground-truth orthogonal map (tests, benchmark, demo).

:func:`make_problem` is the simple model below; :func:`make_hard_problem` adds correlated
prototypes, sub-clusters, a biased modality gap and CLIP confusions (issue 9), and
:func:`semi_split` draws a semi-supervised split (pairs, unpaired VFM + CLIP rows, test rows).

Model: a ground-truth ``Q [dv, dc]`` with orthonormal columns; class means ``m_k`` in VFM space;
text prototypes ``t_k = normalise(m_k Q + text noise)``; VFM patches ``v = m_y + sigma_v n``
(well clustered, as DINO features are); CLIP patches ``c = normalise(v Q) + gap + sigma_c n'``
(noisier and shifted by a constant modality gap, as CLIP patch features are).  Class
frequencies follow a Zipf law, as pixel classes do in segmentation.

Noise for huge streams is built from a fixed Gaussian bank (difference of two random bank rows),
which is orders of magnitude cheaper than drawing fresh normals on a 2-core CPU and keeps every
chunk reproducible from ``(seed, chunk index)`` alone.
"""
import math
from dataclasses import dataclass
from typing import Iterator, Optional, Tuple

import torch

from ._checks import l2n

Tensor = torch.Tensor


def random_orthogonal(dv: int, dc: int, generator: torch.Generator) -> Tensor:
    """Random ``[dv, dc]`` with orthonormal columns (dv >= dc) or rows (dv < dc)."""
    A = torch.randn(max(dv, dc), min(dv, dc), generator=generator, dtype=torch.float64)
    Qm, R = torch.linalg.qr(A)
    Qm = Qm * torch.sign(torch.diagonal(R))[None, :]
    Qm = Qm.float()
    return Qm if dv >= dc else Qm.T.contiguous()


def _noisy(bank: Tensor, i: Tensor, j: Tensor, scale: float,
           base: Optional[Tensor] = None) -> Tensor:
    """``base + scale * (bank[i] - bank[j])`` rows [n, d] (``base`` None: no offset)."""
    out = bank.index_select(0, i)
    out.sub_(bank.index_select(0, j)).mul_(scale)
    return out if base is None else out.add_(base)


@dataclass
class SyntheticProblem:
    Q: Tensor            # [dv, dc] ground truth
    means: Tensor        # [K, dv] class means (VFM space)
    prototypes: Tensor   # [K, dc]
    class_probs: Tensor  # [K]
    gap: Tensor          # [dc] modality gap
    sigma_v: float
    sigma_c: float
    seed: int
    bank_size: int = 4096
    sub_offsets: Optional[Tensor] = None   # [K, S, dv] sub-cluster offsets (None: S = 1)
    clip_vfm_noise: float = 1.0            # share of the VFM noise that CLIP patches also see
    clip_means: Optional[Tensor] = None    # [K, dc] CLIP's view of each class (None: m_k Q)

    @property
    def dims(self) -> Tuple[int, int, int]:
        return self.Q.shape[0], self.Q.shape[1], self.prototypes.shape[0]

    def _bank(self, dim: int, salt: int) -> Tensor:
        g = torch.Generator().manual_seed(self.seed * 7919 + salt)
        return torch.randn(self.bank_size, dim, generator=g)

    def sample(self, n: int, chunk_index: int = 0) -> Tuple[Tensor, Tensor, Tensor]:
        """Draw ``n`` patches: ``(vfm [n, dv], clip [n, dc], labels [n])``, reproducible."""
        dv, dc, K = self.dims
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + 7 * chunk_index + 1)
        y = torch.multinomial(self.class_probs, n, replacement=True, generator=g)
        if not hasattr(self, '_banks'):
            bv = self._bank(dv, 1) * (1 / math.sqrt(2 * dv))
            # v @ Q by linearity from pre-mapped tables: gathers instead of a GEMM per patch
            self._banks = (bv, bv @ self.Q,
                           self.means @ self.Q if self.clip_means is None else self.clip_means,
                           self._bank(dc, 2) * (1 / math.sqrt(2 * dc)))
        bv, bvQ, mQ, bc = self._banks
        i = torch.randint(0, self.bank_size, (4, n), generator=g)
        # in-place forms of ``base + scale * (bank[i] - bank[j])``: same values bit for bit,
        # a third of the allocations (the generator is the benchmark's data source)
        v = _noisy(bv, i[0], i[1], self.sigma_v, self.means[y])
        vQ = _noisy(bvQ, i[0], i[1], self.clip_vfm_noise * self.sigma_v, mQ[y])
        if self.sub_offsets is not None:
            # drawn after everything else so problems without sub-clusters are unchanged
            if not hasattr(self, '_subQ'):
                self._subQ = self.sub_offsets @ self.Q
            s = torch.randint(0, self.sub_offsets.shape[1], (n,), generator=g)
            v.add_(self.sub_offsets[y, s])
            vQ.add_(self._subQ[y, s])
        c = l2n(vQ).add_(self.gap).add_(_noisy(bc, i[2], i[3], self.sigma_c))
        return v, c, y

    def stream(self, n: int, chunk: int = 8192):
        """A re-iterable chunk source (callable) of ``(vfm, clip)`` pairs, N = n rows."""
        def source() -> Iterator[Tuple[Tensor, Tensor]]:
            for j, s in enumerate(range(0, n, chunk)):
                v, c, _ = self.sample(min(chunk, n - s), j)
                yield v, c
        return source

    def recovery_error(self, W: Tensor, subspace: bool = False) -> float:
        """``||W - Q||_F / sqrt(dc)``; with ``subspace=True`` only on the span of the class means
        (the part of W that K < dc prototypes can identify), normalised by its rank."""
        D = (W.float() - self.Q).double()
        if not subspace:
            return float(D.norm() / math.sqrt(self.Q.shape[1]))
        U, S, _ = torch.linalg.svd(self.means.double().T, full_matrices=False)
        U = U[:, S > S.max() * 1e-6]
        return float((U.T @ D).norm() / math.sqrt(U.shape[1]))


def make_problem(dv: int = 64, dc: int = 48, k: int = 60, sigma_v: float = 0.5,
                 sigma_c: float = 1.0, gap: float = 0.5, text_noise: float = 0.05,
                 zipf: float = 1.0, seed: int = 0) -> SyntheticProblem:
    """Build a :class:`SyntheticProblem` (see module docstring); all noise levels are per-row
    norms relative to unit-norm class means."""
    g = torch.Generator().manual_seed(seed)
    Q = random_orthogonal(dv, dc, g)
    means = l2n(torch.randn(k, dv, generator=g))
    t_noise = l2n(torch.randn(k, dc, generator=g)) * text_noise
    prototypes = l2n(l2n(means @ Q) + t_noise)
    probs = 1.0 / torch.arange(1, k + 1, dtype=torch.float64) ** zipf
    probs = probs[torch.randperm(k, generator=g)]
    probs = (probs / probs.sum()).float()
    gap_vec = l2n(torch.randn(dc, generator=g)) * gap
    return SyntheticProblem(Q, means, prototypes, probs, gap_vec, sigma_v, sigma_c, seed)


#: class-frequency presets of :func:`make_hard_problem` (Zipf exponent; 0 = balanced)
BALANCES = {'balanced': 0.0, 'zipf1.1': 1.1, 'zipf1.6': 1.6}


def make_hard_problem(balance: str = 'zipf1.1', k: int = 40, dv: int = 64, dc: int = 64,
                      n_groups: int = 8, correlation: float = 0.7, subclusters: int = 3,
                      sub_spread: float = 0.5, sigma_v: float = 1.8, sigma_c: float = 2.0,
                      gap: float = 1.2, text_noise: float = 0.1, clip_vfm_noise: float = 0.2,
                      gap_lean: float = 0.5, confused: float = 0.5, confusion: float = 0.8,
                      seed: int = 0) -> SyntheticProblem:
    """A problem built to break fixed class priors (the set-up of issue 9).

    * **correlated prototypes**: the K classes fall into ``n_groups`` super-classes; a class
      mean is ``normalise(r g_group + sqrt(1 - r^2) e_k)`` with ``r = correlation``, so
      prototypes of a group have cosine ~ r^2 and CLIP confuses them;
    * **sub-clusters**: every class has ``subclusters`` modes, offset from its mean by random
      vectors of norm ``sub_spread`` (VFM features of one class are multi-modal);
    * **modality gap**: CLIP patches are ``normalise(v Q) + gap + sigma_c n`` with a constant
      ``gap`` vector of norm ``gap``; it shifts every cosine to prototype k by ``gap . t_k``, which
      differs per class (``gap_lean`` of it lies in the span of the super-class directions, so
      whole groups are favoured), so CLIP's zero-shot class histogram is biased;
    * **CLIP confusions**: a fraction ``confused`` of the classes looks to CLIP like another
      class of its super-class (CLIP's view ``(1 - confusion) m_k + confusion m_j``):
      structured errors that no class prior undoes; CLIP shares only ``clip_vfm_noise`` of the
      VFM patch noise (the two towers err independently);
    * **class frequencies** ``balance``: ``'balanced'``, ``'zipf1.1'`` or ``'zipf1.6'`` (Zipf
      exponent; ranks shuffled over classes), or a float exponent.

    Units: all norms relative to unit-norm class means.
    """
    z = BALANCES.get(balance, balance) if isinstance(balance, str) else float(balance)
    if isinstance(z, str):
        raise ValueError(f'balance must be one of {sorted(BALANCES)} or a Zipf exponent, '
                         f'got {balance!r}')
    g = torch.Generator().manual_seed(10_007 * seed + 3)
    Q = random_orthogonal(dv, dc, g)
    groups = l2n(torch.randn(n_groups, dv, generator=g))
    own = l2n(torch.randn(k, dv, generator=g))
    gid = torch.arange(k) % n_groups
    r = float(correlation)
    means = l2n(r * groups[gid] + math.sqrt(max(0.0, 1 - r * r)) * own)
    sub = l2n(torch.randn(k, subclusters, dv, generator=g)) * sub_spread
    sub = sub - sub.mean(1, keepdim=True)          # sub-clusters centred on the class mean
    t_noise = l2n(torch.randn(k, dc, generator=g)) * text_noise
    prototypes = l2n(l2n(means @ Q) + t_noise)
    probs = 1.0 / torch.arange(1, k + 1, dtype=torch.float64) ** float(z)
    probs = probs[torch.randperm(k, generator=g)]
    probs = (probs / probs.sum()).float()
    # the gap leans towards some super-classes (as CLIP's image cone favours some concepts)
    lean = l2n(torch.randn(n_groups, generator=g) @ (groups @ Q))
    gap_vec = l2n(gap_lean * lean + math.sqrt(max(0.0, 1 - gap_lean ** 2))
                  * l2n(torch.randn(dc, generator=g))) * gap
    clip_view = means.clone()
    n_conf = int(round(confused * k))
    for i in torch.randperm(k, generator=g)[:n_conf].tolist():
        mates = [j for j in range(k) if gid[j] == gid[i] and j != i]
        if mates:
            j = mates[int(torch.randint(len(mates), (1,), generator=g))]
            clip_view[i] = (1 - confusion) * means[i] + confusion * means[j]
    clip_means = l2n(clip_view) @ Q
    return SyntheticProblem(Q, means, prototypes, probs, gap_vec, sigma_v, sigma_c, seed,
                            sub_offsets=sub if subclusters > 1 else None,
                            clip_means=clip_means,
                            clip_vfm_noise=clip_vfm_noise)


@dataclass
class SemiSplit:
    """Semi-supervised data drawn from one problem (disjoint chunks of its stream).

    ``pair_vfm [n, dv]`` / ``pair_labels [n]``: labelled patches drawn with the class
    frequencies (so rare classes may have no pair, as with a few labelled masks);
    ``unpaired_vfm [N, dv]`` / ``unpaired_clip [N, dc]``: unlabelled patches (``unpaired_labels``
    is kept for evaluation only); ``test_*``: held-out patches for accuracy.
    """
    pair_vfm: Tensor
    pair_labels: Tensor
    unpaired_vfm: Tensor
    unpaired_clip: Tensor
    unpaired_labels: Tensor
    test_vfm: Tensor
    test_clip: Tensor
    test_labels: Tensor


def semi_split(problem: SyntheticProblem, n_pairs: int, n_unpaired: int = 20000,
               n_test: int = 10000) -> SemiSplit:
    """Labelled pairs proportional to class frequency + unpaired patches with their CLIP
    features + a held-out test set, from disjoint chunk indices (deterministic per problem)."""
    pv, _, py = problem.sample(max(int(n_pairs), 1), chunk_index=900_001)
    uv, uc, uy = problem.sample(int(n_unpaired), chunk_index=0)
    tv, tc, ty = problem.sample(int(n_test), chunk_index=900_002)
    return SemiSplit(pv[:n_pairs], py[:n_pairs], uv, uc, uy, tv, tc, ty)


def accuracy(logits: Tensor, labels: Tensor, k: Optional[int] = None) -> Tuple[float, float]:
    """``(accuracy, mean per-class accuracy)`` of ``argmax logits [n, K]`` against ``labels [n]``
    (the mean runs over classes present in ``labels``)."""
    pred = logits.argmax(-1)
    k = k or logits.shape[-1]
    hit = (pred == labels).float()
    per = torch.zeros(k).index_add_(0, labels, hit)
    cnt = torch.bincount(labels, minlength=k).float()
    present = cnt > 0
    return float(hit.mean()), float((per[present] / cnt[present]).mean())
