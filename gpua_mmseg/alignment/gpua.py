"""GPUA: unsupervised, geometry-preserving alignment of VFM patch features to CLIP text space.

Stage 1 estimates soft correspondences ``P [N, K]`` between unlabelled patches and the K text
prototypes (joint-feature soft k-means + entropic OT); stage 2 solves a weighted orthogonal
Procrustes problem for ``W`` and refines it with a hubness-aware margin loss while staying on
the Stiefel manifold.  See docs/method.md (GPUA section) for the maths; this file documents the
engineering choices.

Memory is bounded independently of N: features are streamed in chunks (several passes), the
OT column potentials are estimated on a fixed-size uniform random pool of rows (rows of P are
then exact softmaxes for every patch), and refinement mini-batches are drawn from that pool.
"""
import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional, Sequence

import torch

from ..version import __version__
from ._checks import (FeatureStream, check_int, check_nonneg, check_positive, check_prototypes,
                      flush_subnormal_, l2n)
from .artifact import AlignmentMap, vocabulary_hash
from .em import procrustes_cosines, self_train_map
from .linalg import orthogonality_error, polar, stiefel_step
from .ot import sinkhorn

Tensor = torch.Tensor


@dataclass
class GPUAConfig:
    """Hyper-parameters of :func:`fit_gpua` (defaults follow the paper / method.md).

    ``class_prior`` -- the column marginal of the OT plan:

    * ``'uniform'``: the reference; right for balanced classes, but on segmentation data
      (Zipf-like pixel classes) it forces mass of the big classes onto small ones;
    * ``'clip'``: the mean CLIP zero-shot posterior, floored; biased by the modality gap (CLIP
      over-predicts some classes whatever their true frequency), so it loses on balanced data;
    * ``'unbalanced'``: KL-relaxed column marginal (strength ``unbalanced_rho``);
    * ``'adaptive'`` (default): start uniform and, after every outer iteration, re-estimate the
      marginal by EM (:func:`self_train_map`) *in VFM space*: a Procrustes map fitted to the
      current plan classifies the pool's VFM rows, the mixture weights are re-estimated from
      that posterior, and the next plan uses them.  Why not from the CLIP scores: a per-class
      score offset (what the modality gap causes) and a class frequency are indistinguishable in
      the OT scores -- the column potential absorbs either -- so any marginal estimated from
      CLIP inherits CLIP's bias.  The VFM clusters' sizes carry no CLIP bias, and an orthogonal
      map cannot follow a wrong marginal by itself, so the estimate moves towards the true
      frequencies (measured on ``synthetic.make_hard_problem``: the estimated marginal ends
      within L1 0.05 of the truth on balanced and Zipf 1.1 data).  The floor ``prior_floor / K``
      keeps rare classes alive; the estimate uses ``prior_rows`` pool rows (cost independent
      of N).

      **Prior check** (``prior_check``, default on): the EM trusts the VFM's clusters, so a VFM
      whose clusters are not the classes (a noisy VFM, classes with several modes) can drag
      the marginal away from the truth (toy world, first VFM: the 'sand' background got 12 %
      of the mass against 39 % of the patches; CLIP's histogram said 28 %).  After stage 1,
      each candidate marginal -- the EM estimate, uniform, CLIP's (floored) -- is used as a
      fixed prior for stage 1 on ``prior_rows`` pool rows, a weighted Procrustes map is fitted
      to the resulting plan, and the candidate scores the share of rows where that map's own
      prediction (argmax cos(v W, t), what inference uses) equals the plan's argmax: an
      orthogonal map reproduces a plan whose marginal the VFM geometry supports.  The EM
      estimate stays unless another candidate scores more than ``prior_check_margin`` higher
      (ties keep it); then stage 1 is redone with that fixed marginal.  Measured (agreement
      adaptive / uniform / clip -> choice): toy world 0.35 / 0.31 / 0.37 -> clip (patch
      accuracy 0.255 -> 0.357); make_hard_problem balanced 0.48 / 0.48 / 0.40, Zipf 1.1
      0.65 / 0.31 / 0.36, Zipf 1.6 0.47 / 0.22 / 0.34 -> adaptive, the best prior there; 8
      classes, two dominant, multi-modal in a noisy VFM (``tests/alignment/test_semi.py``):
      -> clip, +14 to +43 points.  Limits: it does not catch every such case (K = 40 with
      wide sub-clusters, ``sub_spread`` >= 1.5: the over-split EM plan is self-consistent and
      'clip' is better by ~28 points; set ``class_prior='clip'`` when the classes are known to
      be multi-modal and CLIP has little modality-gap bias).  Cost: 3 x ``outer_iters``
      Sinkhorns on ``prior_rows`` rows, independent of N.
    """
    # stage 1: correspondence estimation
    z_temperature: float = 100.0     # init z = softmax(z_temperature * cos(c, t))
    top_m: int = 8                   # patches per prototype for the initial centroids
    outer_iters: int = 3
    alpha: float = 0.1               # weight of the joint-feature (structural) distance
    beta: float = 0.9                # weight of the CLIP-to-text (semantic) distance
    tau: float = 0.1                 # cost temperature: scores = -C / tau
    eps: float = 0.05                # entropic regularisation of the OT plan
    sinkhorn_iters: int = 50
    sinkhorn_tol: float = 1e-5
    sinkhorn_rows: int = 65536       # pool of rows on which column potentials are estimated
    centroid_rows: str = 'pool'      # centroid updates from the pool ('pool') or a full pass
                                     # over all N rows ('all'); identical when N <= pool
    class_prior: str = 'adaptive'    # 'adaptive' | 'uniform' | 'clip' | 'unbalanced'
    prior_floor: float = 0.1         # 'clip' / 'adaptive': every class keeps >= prior_floor / K
    adaptive_iters: int = 4          # 'adaptive': outer iterations (>= outer_iters)
    prior_em_steps: int = 4          # 'adaptive': EM steps per re-estimate
    prior_rows: int = 8192           # 'adaptive': pool rows used by the re-estimate
    prior_check: bool = True         # 'adaptive': fall back to a fixed prior the VFM fits better
    prior_check_margin: float = 0.01  # ... only when its agreement is higher by more than this
    unbalanced_rho: float = 1.0      # KL relaxation of the column marginal ('unbalanced')
    # stage 2: orthogonal map
    targets: str = 'soft'            # 'soft' (y = P t) | 'hard' (y = t_argmax)
    confidence_floor: float = 0.0    # rows with max_k P_pk below this get zero weight
    refine_steps: int = 50           # the paper: 200; measured on the benchmark problem
                                     # (tools/benchmark_alignment.py, 1e5 patches) 50 steps give
                                     # a lower recovery error (0.300 vs 0.382) at 1/4.8 of the
                                     # cost, and equal or higher accuracy on make_hard_problem
    refine_lr: float = 5e-4
    refine_lr_min: float = 1e-7
    refine_weight_decay: float = 5e-4
    refine_batch_size: int = 1024    # capped by 0.75 * pool size (GPU users: raise it); 1024
                                     # and 2048 give equal accuracy on make_hard_problem and
                                     # recovery error 0.286 vs 0.300 on the benchmark problem
    refine_retract_tol: float = 1e-4  # max|W^T W - I| after every step (exact polar at the end)
    hub_k: int = 3                   # neighbours N_k(p) in the hubness-aware margin loss
    hub_weight: float = 2.0          # margin += hub_weight * hub score
    csls_k: int = 10
    # engineering
    chunk_size: int = 8192           # rows per chunk (small chunks avoid page-fault storms
                                     # from large allocations; GEMMs are still efficient)
    device: Optional[str] = None     # None: the features' device (streams: cpu)

    def validate(self) -> None:
        if self.class_prior not in ('uniform', 'clip', 'unbalanced', 'adaptive'):
            raise ValueError(f"class_prior must be 'uniform', 'clip' or 'unbalanced', got "
                             f'{self.class_prior!r}')
        if self.centroid_rows not in ('pool', 'all'):
            raise ValueError(f"centroid_rows must be 'pool' or 'all', got {self.centroid_rows!r}")
        if self.targets not in ('soft', 'hard'):
            raise ValueError(f"targets must be 'soft' or 'hard', got {self.targets!r}")
        check_positive(self, ('tau', 'eps', 'z_temperature', 'refine_lr', 'sinkhorn_tol',
                              'unbalanced_rho', 'refine_retract_tol'), 'GPUAConfig')
        check_nonneg(self, ('alpha', 'beta', 'refine_lr_min', 'refine_weight_decay',
                            'hub_weight', 'confidence_floor', 'prior_floor',
                            'prior_check_margin'), 'GPUAConfig')
        check_int(self, ('top_m', 'outer_iters', 'sinkhorn_iters', 'sinkhorn_rows', 'chunk_size',
                         'refine_batch_size', 'hub_k', 'csls_k', 'prior_rows'), 1, 'GPUAConfig')
        check_int(self, ('refine_steps', 'adaptive_iters', 'prior_em_steps'), 0, 'GPUAConfig')
        if not isinstance(self.prior_check, bool):
            raise ValueError(f'GPUAConfig.prior_check must be True or False, got '
                             f'{self.prior_check!r}')
        if self.prior_floor > 1:
            raise ValueError(f'GPUAConfig.prior_floor must lie in [0, 1], got {self.prior_floor}')


class Correspondence:
    """Result of stage 1: centroids ``mu [K, dc+dv]`` and column potentials ``beta [K]``.

    ``plan(c, v)`` gives the soft assignment rows ``P [n, K]`` (rows sum to 1) of any patches.
    """

    def __init__(self, T: Tensor, mu: Tensor, beta: Tensor, cfg: GPUAConfig):
        self.T, self.mu, self.beta, self.cfg = T, mu, beta, cfg

    def scores(self, c_hat: Tensor, v_hat: Tensor) -> Tensor:
        """-C / tau [n, K] for L2-normalised CLIP rows ``c_hat [n, dc]`` and VFM rows
        ``v_hat [n, dv]`` (the joint row is q = [c_hat; v_hat], never materialised)."""
        cfg = self.cfg
        dc = c_hat.shape[1]
        # ||q||^2 = ||c_hat||^2 + ||v_hat||^2 = 2 for unit rows (0 or 1 each for zero rows)
        qn2 = ((c_hat.abs().sum(1, keepdim=True) > 0).to(c_hat.dtype)
               + (v_hat.abs().sum(1, keepdim=True) > 0).to(c_hat.dtype))
        # one GEMM for the CLIP side against [T; mu_c], one for the VFM side against mu_v
        both = c_hat @ torch.cat([self.T, self.mu[:, :dc]]).T           # [n, 2K]
        K = self.T.shape[0]
        qm = both[:, K:].addmm_(v_hat, self.mu[:, dc:].T)
        d_joint = qm.mul_(-2.0).add_(qn2 + 1.0).clamp_min_(0).sqrt_()
        d_sem = both[:, :K].mul_(-2.0).add_(2.0).clamp_min_(0).sqrt_()
        return d_joint.mul_(-cfg.alpha / cfg.tau).sub_(d_sem.mul_(cfg.beta / cfg.tau))

    def plan(self, c: Tensor, v: Tensor, normalised: bool = False) -> Tensor:
        """``normalised=True``: ``c``, ``v`` are already unit (or zero) float32 rows."""
        if not normalised:
            c, v = l2n(c.float()), l2n(v.float())
        S = self.scores(c, v)
        return flush_subnormal_(torch.softmax(S.div_(self.cfg.eps).add_(self.beta), dim=1))


def _merge_topk(best_val, best_q, val, q, m):
    """Keep the m largest values per column: vals [*, K], q [*, K, dq]."""
    if best_val is not None:
        val, q = torch.cat([best_val, val]), torch.cat([best_q, q])
    if val.shape[0] <= m:
        return val, q
    top, idx = val.topk(m, dim=0)
    return top, torch.gather(q, 0, idx[..., None].expand(-1, -1, q.shape[-1]))


class _Reservoir:
    """Deterministic uniform sample of ``size`` rows from a stream (the smallest random keys).

    Rows are appended into a preallocated buffer of ``2 * size`` and compacted when it fills;
    once the sample is full only rows whose key beats the current threshold are copied, so the
    total copying is O(size * log(N / size)) rows rather than a pool copy per chunk.
    """

    def __init__(self, size: int, seed: int):
        self.size, self.seed = size, seed
        self.keys = self.rows = None
        self.count, self.thr = 0, math.inf

    def add(self, offset: int, *parts: Tensor) -> None:
        """Offer rows ``cat(parts, dim=1)`` (only the accepted ones are concatenated)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + offset)
        keys = torch.rand(parts[0].shape[0], generator=g).to(parts[0].device)
        keep = keys < self.thr
        if not bool(keep.all()):
            keys, parts = keys[keep], [p[keep] for p in parts]
        rows = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
        if self.rows is None:
            self.rows = rows.new_empty(2 * self.size, rows.shape[1])
            self.keys = keys.new_empty(2 * self.size)
        start = 0
        while start < keys.numel():
            if self.count == self.rows.shape[0]:
                self._compact()
            take = min(keys.numel() - start, self.rows.shape[0] - self.count)
            self.rows[self.count:self.count + take] = rows[start:start + take]
            self.keys[self.count:self.count + take] = keys[start:start + take]
            self.count += take
            start += take

    def _compact(self) -> None:
        k = min(self.size, self.count)
        top = self.keys[:self.count].topk(k, largest=False)
        self.rows[:k] = self.rows[top.indices]
        self.keys[:k] = top.values
        self.count = k
        if k == self.size:
            self.thr = float(top.values.max())

    def result(self) -> Tensor:
        self._compact()
        order = self.keys[:self.count].argsort()
        return self.rows[order]


def _hubness_margin_loss(u: Tensor, T: Tensor, y: Tensor, k: int, hub_weight: float) -> Tensor:
    """Hubness-aware margin loss on mapped, normalised features ``u [B, dc]``; targets ``y [B]``."""
    # unit vectors: ||u - t|| = sqrt(2 - 2 u.t); far cheaper than cdist (whose CPU backward
    # dominated the whole fit)
    d = (2.0 - 2.0 * (u @ T.T)).clamp_min(1e-12).sqrt()     # [B, K]
    with torch.no_grad():
        kk = min(k, T.shape[0])
        nn_idx = d.topk(kk, dim=1, largest=False).indices     # [B, kk]
        hub = torch.bincount(nn_idx.reshape(-1), minlength=T.shape[0]).float() / u.shape[0]
        cos_ty = T[y] @ T.T                                   # [B, K]
        margin = (1 - cos_ty) / 2 + hub_weight * hub[None, :]
        valid = nn_idx != y[:, None]                          # the target itself is no rival
    d_pos = d.gather(1, y[:, None])
    d_nn = d.gather(1, nn_idx)
    terms = (d_pos + margin.gather(1, nn_idx) - d_nn).clamp_min(0) * valid
    return terms.sum() / valid.sum().clamp_min(1)


def refine_hubness(W0: Tensor, v_hat: Tensor, y: Tensor, T: Tensor, cfg: GPUAConfig,
                   seed: int) -> Tensor:
    """Hubness-aware refinement of ``W0 [dv, dc]`` on normalised features ``v_hat [n, dv]`` with
    pseudo-labels ``y [n]``; AdamW + cosine schedule; W is retracted onto the Stiefel manifold
    after every step, so the result stays orthogonal."""
    if cfg.refine_steps <= 0:
        return W0
    W = torch.nn.Parameter(W0.clone())
    opt = torch.optim.AdamW([W], lr=cfg.refine_lr, weight_decay=cfg.refine_weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.refine_steps,
                                                       eta_min=cfg.refine_lr_min)
    g = torch.Generator().manual_seed(seed + 17)
    n = v_hat.shape[0]
    bs = max(1, min(cfg.refine_batch_size, int(0.75 * n)))
    for _ in range(cfg.refine_steps):
        idx = torch.randperm(n, generator=g)[:bs].to(v_hat.device)
        u = l2n(v_hat[idx] @ W)
        # refine_retract_tol 1e-4: one Newton-Schulz iteration per step instead of two at 1e-6
        # (the retraction was ~40 % of a step); the exact polar factor follows the last step
        stiefel_step(_hubness_margin_loss(u, T, y[idx], cfg.hub_k, cfg.hub_weight), W, opt, sched,
                     tol=cfg.refine_retract_tol)
    return W.detach()


def estimate_correspondence(stream: FeatureStream, T: Tensor, cfg: GPUAConfig, seed: int,
                            timings: Dict[str, float], checks: Optional[Dict[str, Any]] = None):
    """Stage 1 over a feature stream.  Returns (Correspondence, pool_q, pool_P, prior, N);
    ``checks`` (optional dict) receives the adaptive prior check's numbers."""
    checks = {} if checks is None else checks
    K, dc = T.shape
    t0 = time.perf_counter()
    z_sum = torch.zeros(K, dtype=torch.float64, device=T.device)
    best_val = best_q = None
    pool = _Reservoir(cfg.sinkhorn_rows, seed)
    for off, (v, c) in stream:
        c_hat, v_hat = l2n(c), l2n(v)
        z = torch.softmax(cfg.z_temperature * (c_hat @ T.T), dim=1)
        z_sum += z.sum(0, dtype=torch.float64)
        m = min(cfg.top_m, z.shape[0])
        val, idx = z.topk(m, dim=0)                                    # [m, K]
        q_top = torch.cat([c_hat[idx], v_hat[idx]], -1)                  # [m, K, dq]
        best_val, best_q = _merge_topk(best_val, best_q, val, q_top, cfg.top_m)
        pool.add(off, c_hat, v_hat)
    N = stream.n
    if N < K:
        raise ValueError(f'only {N} feature rows for K = {K} prototypes: need N >= K (use more '
                         'images or fewer class names)')
    pool_q = pool.result()
    mu = l2n((best_val[..., None] * best_q).sum(0))                   # [K, dq]
    z_mean = (z_sum / N).float()
    clip_prior = z_mean.clamp_min(cfg.prior_floor / K)      # CLIP's histogram, floored
    clip_prior = clip_prior / clip_prior.sum()
    uniform = torch.full((K,), 1.0 / K, device=T.device)
    prior = clip_prior if cfg.class_prior == 'clip' else uniform
    rho = cfg.unbalanced_rho if cfg.class_prior == 'unbalanced' else None
    timings['init'] = time.perf_counter() - t0

    corr = Correspondence(T, mu, torch.zeros(K, device=T.device), cfg)
    adaptive = cfg.class_prior == 'adaptive'
    n_outer = max(cfg.outer_iters, cfg.adaptive_iters) if adaptive else cfg.outer_iters
    pool_P, prior = _outer_iterations(corr, pool_q, prior, adaptive, n_outer, rho, stream, cfg,
                                      timings)
    if adaptive and cfg.prior_check:
        t1 = time.perf_counter()
        cands = {'adaptive': prior, 'uniform': uniform, 'clip': clip_prior}
        _, RT = torch.linalg.qr(T.double().T)
        agree = {k: _map_plan_agreement(T, RT, mu, pool_q, b, cfg) for k, b in cands.items()}
        best = max(agree, key=agree.get)
        chosen = best if agree[best] > agree['adaptive'] + cfg.prior_check_margin else 'adaptive'
        timings['prior_check'] = time.perf_counter() - t1
        checks['prior_check'] = dict(agreement=agree, chosen=chosen)
        if chosen != 'adaptive':
            # the VFM geometry cannot follow the EM marginal: redo stage 1 with the fixed prior
            corr.mu, corr.beta = mu, torch.zeros(K, device=T.device)
            pool_P, prior = _outer_iterations(corr, pool_q, cands[chosen], False,
                                              cfg.outer_iters, None, stream, cfg, timings)
    return corr, pool_q, pool_P, prior, N


def _outer_iterations(corr: Correspondence, pool_q: Tensor, prior: Tensor, adaptive: bool,
                      n_outer: int, rho: Optional[float], stream: Optional[FeatureStream],
                      cfg: GPUAConfig, timings: Dict[str, float]):
    """Stage 1's alternation of OT plans on the pool and centroid updates (``corr`` is updated
    in place; ``stream=None``: centroids from the pool whatever ``cfg.centroid_rows``).
    Returns ``(pool_P [n_pool, K] with rows summing to 1, prior [K])``."""
    T, mu = corr.T, corr.mu
    K, dc = T.shape
    pool_c = pool_q[:, :dc]
    beta = None
    for it in range(n_outer):
        t1 = time.perf_counter()
        S = corr.scores(pool_c, pool_q[:, dc:])
        pool_P, _, beta = sinkhorn(S, b=prior, eps=cfg.eps, n_iters=cfg.sinkhorn_iters,
                                   tol=cfg.sinkhorn_tol, rho=rho, return_potentials=True,
                                   init_beta=beta)
        pool_P = pool_P * pool_P.shape[0]                              # rows sum to 1
        corr.beta = beta
        timings['sinkhorn'] = timings.get('sinkhorn', 0.0) + time.perf_counter() - t1
        if it == n_outer - 1:
            break
        if adaptive:
            t1 = time.perf_counter()
            prior = _reestimate_prior(pool_q[:, dc:], pool_P, T, prior, cfg)
            timings['prior'] = timings.get('prior', 0.0) + time.perf_counter() - t1
        t1 = time.perf_counter()
        if cfg.centroid_rows == 'pool' or stream is None:
            # the pool is a uniform sample of all rows and pool_P its exact OT plan rows
            num, den = (pool_P.T @ pool_q).double(), pool_P.sum(0, dtype=torch.float64)
        else:
            num = torch.zeros_like(mu, dtype=torch.float64)
            den = torch.zeros(K, dtype=torch.float64, device=T.device)
            for _, (v, c) in stream:
                c_hat = l2n(c)
                v_hat = l2n(v)
                q = torch.cat([c_hat, v_hat], 1)
                P = corr.plan(c_hat, v_hat, normalised=True)
                num += (P.T @ q).double()
                den += P.sum(0, dtype=torch.float64)
        # a prototype that received no mass keeps its previous centroid
        upd = (num / den.clamp_min(1e-12)[:, None]).float()
        mu = torch.where(den[:, None] > 1e-9, l2n(upd), mu)
        corr.mu = mu
        timings['centroids'] = timings.get('centroids', 0.0) + time.perf_counter() - t1
    return pool_P, prior


def _map_plan_agreement(T: Tensor, RT: Tensor, mu0: Tensor, pool_q: Tensor, b: Tensor,
                        cfg: GPUAConfig) -> float:
    """The prior check of ``class_prior='adaptive'`` (see :class:`GPUAConfig`) for one fixed
    marginal ``b [K]``: stage 1 from the initial centroids ``mu0`` on the first ``prior_rows``
    pool rows (the pool is shuffled: a prefix is a uniform sample), then the share of those
    rows whose orthogonal-map prediction ``argmax cos(v W_b, T)`` equals the plan's argmax
    (``W_b``: the weighted Procrustes map fitted to that plan); ``T^T = Q RT`` (thin QR)."""
    K, dc = T.shape
    sub = pool_q[:min(pool_q.shape[0], cfg.prior_rows)]
    corr = Correspondence(T, mu0, torch.zeros(K, device=T.device), cfg)
    P, _ = _outer_iterations(corr, sub, b, False, cfg.outer_iters, None, None, cfg, {})
    L, _ = procrustes_cosines(sub[:, dc:], P, RT)
    return float((L.argmax(1) == P.argmax(1)).float().mean())


def _reestimate_prior(pool_v: Tensor, pool_P: Tensor, T: Tensor, prior: Tensor,
                      cfg: GPUAConfig) -> Tensor:
    """EM re-estimate of the class marginal from the current plan (``class_prior='adaptive'``)."""
    n = min(pool_v.shape[0], cfg.prior_rows)       # the pool is shuffled: a prefix is uniform
    b, _, _ = self_train_map(pool_v[:n], pool_P[:n], T, prior, cfg.prior_em_steps,
                             cfg.z_temperature, cfg.prior_floor, return_map=False)
    return b


def gpua_map(stream: FeatureStream, corr: Correspondence, pool_q: Tensor, pool_P: Tensor,
             T: Tensor, cfg: GPUAConfig, seed: int, timings: Dict[str, float]):
    """GPUA's stages 2-3 after :func:`estimate_correspondence`: weighted Procrustes over the
    stream's plan, then the hubness-aware refinement on the pool.  The one home of GPUA's map
    (:func:`fit_gpua` and SOTAlign's ``'gpua'`` candidate).

    Returns ``(W [dv, dc] orthogonal, pseudo-label counts [K] float64, confidence sum, dv)``.
    """
    K, dc = T.shape
    device = T.device
    with torch.no_grad():
        t1 = time.perf_counter()
        # M = sum_p w_p v_p y_p^T with y_p = P_p T (or T_argmax) factorises as (V^T (w P)) T:
        # accumulate the [dv, K] statistic G and apply T once -- K/dc times fewer FLOPs.
        G = None
        counts = torch.zeros(K, dtype=torch.float64, device=device)
        conf_sum = 0.0
        for _, (v, c) in stream:
            v_hat = l2n(v.float())
            P = corr.plan(l2n(c.float()), v_hat, normalised=True)
            w, arg = P.max(1)
            if cfg.confidence_floor > 0:
                w = w * (w >= cfg.confidence_floor)
            if cfg.targets == 'soft':
                A = P.mul_(w[:, None])
            else:
                A = torch.zeros_like(P).scatter_(1, arg[:, None], w[:, None])
            part = (v_hat.T @ A).double()                   # fp32 GEMM, fp64 accumulation
            G = part if G is None else G + part
            counts += torch.bincount(arg, minlength=K).double()
            conf_sum += float(w.sum())
        dv = G.shape[0]
        W0 = polar(G @ T.double()).float()
        timings['procrustes'] = time.perf_counter() - t1
    t1 = time.perf_counter()
    W = refine_hubness(W0, pool_q[:, dc:], pool_P.argmax(1), T, cfg, seed)
    W = polar(W).float()            # exact polar factor: orthogonality to float32 precision
    timings['refine'] = time.perf_counter() - t1
    return W, counts, conf_sum, dv


def fit_gpua(vfm_feats, clip_feats, prototypes: Tensor, config: Optional[GPUAConfig] = None,
             seed: int = 0, vocabulary: Optional[Sequence] = None,
             meta: Optional[Dict[str, Any]] = None, return_correspondence: bool = False):
    """Fit a GPUA orthogonal map without labels.

    Args:
        vfm_feats: VFM patch features [N, dv], or a callable returning a fresh iterator of
            ``(vfm_chunk [n, dv], clip_chunk [n, dc])`` (then ``clip_feats`` must be None).
        clip_feats: CLIP patch features in the joint space [N, dc], paired row by row.
        prototypes: text prototypes [K, dc] (one per query name).
        config: :class:`GPUAConfig`.   seed: makes the fit deterministic.
        vocabulary: optional names of the K prototypes (recorded with their hash).
        meta: extra metadata merged into the artifact (e.g. model names).
        return_correspondence: also return the stage-1 :class:`Correspondence`.

    Returns:
        :class:`AlignmentMap` with ``W [dv, dc]`` (orthogonal to ~1e-6), or
        ``(AlignmentMap, Correspondence)``.
    """
    cfg = config or GPUAConfig()
    cfg.validate()
    T0 = time.perf_counter()
    T_raw = check_prototypes(prototypes)
    K, dc = T_raw.shape
    if callable(vfm_feats) and not isinstance(vfm_feats, torch.Tensor):
        if clip_feats is not None:
            raise ValueError('when vfm_feats is a chunk source, pass clip_feats=None (the source '
                             'yields (vfm_chunk, clip_chunk) pairs)')
        feats = vfm_feats
    else:
        if clip_feats is None:
            raise ValueError('clip_feats is required when vfm_feats is a tensor')
        feats = (vfm_feats, clip_feats)
    stream = FeatureStream(feats, dims=(None, dc), names=('vfm_feats', 'clip_feats'),
                           chunk_size=cfg.chunk_size, device=cfg.device)
    if stream.tensors is not None and stream.n < K:
        raise ValueError(f'only {stream.n} feature rows for K = {K} prototypes: need N >= K '
                         '(use more images or fewer class names)')
    device = stream.device
    T = l2n(T_raw.to(device, torch.float32))
    timings: Dict[str, float] = {}
    with torch.no_grad():
        checks: Dict[str, Any] = {}
        corr, pool_q, pool_P, prior, N = estimate_correspondence(stream, T, cfg, seed, timings,
                                                                 checks)
    W, counts, conf_sum, dv = gpua_map(stream, corr, pool_q, pool_P, T, cfg, seed, timings)
    pool_v = pool_q[:, dc:]
    with torch.no_grad():
        u = l2n(pool_v @ W)
        cos = u @ T.T
        csls_r = cos.topk(min(cfg.csls_k, cos.shape[0]), dim=0).values.mean(0)
    timings['total'] = time.perf_counter() - T0
    info = dict(
        method='gpua', config=asdict(cfg), seed=int(seed), n_samples=int(N), dv=int(dv),
        dc=int(dc), n_prototypes=int(K), class_prior_used=prior.tolist(),
        pseudo_label_counts=counts.long().tolist(), mean_confidence=conf_sum / max(N, 1),
        orthogonality_error=orthogonality_error(W), timings_s=timings,
        torch_version=torch.__version__, package_version=__version__, **checks)
    if vocabulary is not None:
        n_names = sum(1 if isinstance(v, str) else len(v) for v in vocabulary)
        if n_names != K:
            raise ValueError(f'vocabulary has {n_names} query names but there are {K} '
                             'prototypes (one prototype per query name / synonym)')
        info['vocabulary'] = [v if isinstance(v, str) else list(v) for v in vocabulary]
        info['vocab_hash'] = vocabulary_hash(vocabulary)
    info.update(meta or {})
    amap = AlignmentMap(W.cpu(), info, csls_r=csls_r.cpu())
    return (amap, corr) if return_correspondence else amap
