"""SOTAlign: semi-supervised alignment from a few labelled pairs plus unpaired VFM patches.

A "pair" is (VFM patch feature, index of its text prototype), e.g. taken from a labelled mask.
Stage 1 fits a linear teacher on the pairs (Procrustes or ridge-CCA); stage 2 refines an
orthogonal student ``W`` on unpaired patches with either the KLOT loss (KL between the teacher's
and the student's entropic OT plans, explicit gradient) plus a pair loss, or the cheaper
``ot_procrustes`` alternation.  The output is the same :class:`AlignmentMap` as GPUA's.

Unpaired patches are streamed once into a fixed-size uniform random pool (memory bounded in N).
"""
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..version import __version__
from ._checks import (FeatureStream, as_labels, check_int, check_matrix, check_nonneg,
                      check_positive, check_prototypes, l2n)
from .artifact import AlignmentMap, vocabulary_hash
from .em import self_train_map
from .gpua import GPUAConfig, _Reservoir, estimate_correspondence, gpua_map
from .linalg import orthogonality_error, polar, stiefel_step
from .ot import klot, sinkhorn

Tensor = torch.Tensor


@dataclass
class SOTAlignConfig:
    """Hyper-parameters of :func:`fit_sotalign` (defaults from the SOTAlign paper, plus the
    CLIP-aware semi-supervised path and the safeguard of issue 9).

    ``class_prior`` -- the column marginal of every OT plan on unpaired data: ``'adaptive'``
    (default; EM re-estimate in VFM space, see :func:`em.self_train_map`), ``'uniform'`` (the
    paper; forces a flat predicted class histogram) or ``'pairs'`` (label frequencies of the
    pairs).  ``select`` -- ``'cv'`` (default): ``cv_folds``-fold cross-validation on the pairs
    picks the final map among the candidates (teacher, refined / GPUA / semi-supervised), so
    the fit does not end below its own teacher; ``'none'``: return the refined map as is.
    ``use_clip`` -- when the unpaired patches' CLIP features are given, build on GPUA's
    CLIP+VFM correspondences (``gpua`` holds :class:`GPUAConfig` overrides for that stage).
    """
    teacher: str = 'cca'             # 'procrustes' | 'cca'
    cca_ridge: float = 0.1           # added to covariance eigenvalues
    cca_dim: Optional[int] = None    # d' of the CCA space (default: min(dv, dc))
    refine: str = 'ot_procrustes'    # 'ot_procrustes' (reliable default) | 'klot'
    eps: float = 0.05                # student plan regularisation
    eps_teacher: float = 0.01        # teacher plan regularisation (public code: 0.005)
    alpha: float = 1e-4              # weight of KLOT
    pair_loss: str = 'siglip'        # 'siglip' | 'cosine'
    siglip_scale_init: float = 20.0
    siglip_bias_init: float = -10.0
    optimizer: str = 'adamw'         # 'adamw' | 'lion'
    lr: float = 1e-4
    weight_decay: float = 1e-5
    steps: int = 2000
    batch_size: int = 4096           # unpaired batch (paper: <= 32768)
    sinkhorn_iters: int = 100
    sinkhorn_tol: float = 1e-6
    teacher_sinkhorn_iters: int = 3000   # KLOT teacher plan (small eps_teacher converges slowly)
    class_prior: str = 'adaptive'    # 'adaptive' | 'uniform' | 'pairs'
    prior_floor: float = 0.1         # 'adaptive': every class keeps >= prior_floor / K
    prior_temperature: float = 100.0 # 'adaptive' / semi: scale of the map's cosines in the EM
    otp_iters: int = 20              # ot_procrustes alternations
    otp_lambda: float = 1.0          # weight of the unpaired term in ot_procrustes
    # CLIP-aware semi-supervised path (used when unpaired CLIP features are given)
    use_clip: bool = True
    semi_iters: int = 8              # EM self-training steps of the semi-supervised map
    anchor_weight: float = 10.0      # a pair weighs anchor_weight unpaired rows, spread
                                     # evenly over labelled classes (see _anchor_stat)
    em_rows: int = 32768             # pool rows used by the EM steps (a uniform prefix)
    gpua: Dict[str, Any] = field(default_factory=dict)   # GPUAConfig overrides (stage 1)
    # safeguard
    select: str = 'cv'               # 'cv' | 'none'
    cv_folds: int = 3
    pool_size: int = 65536           # unpaired rows kept (uniform random sample of the stream)
    chunk_size: int = 8192           # rows per chunk (small chunks avoid page-fault storms
                                     # from large allocations; GEMMs are still efficient)
    device: Optional[str] = None

    def validate(self) -> None:
        choices = dict(teacher=('procrustes', 'cca'), refine=('klot', 'ot_procrustes'),
                       pair_loss=('siglip', 'cosine'), optimizer=('adamw', 'lion'),
                       class_prior=('adaptive', 'uniform', 'pairs'), select=('cv', 'none'))
        for k, allowed in choices.items():
            if getattr(self, k) not in allowed:
                raise ValueError(f'SOTAlignConfig.{k} must be one of {allowed}, got '
                                 f'{getattr(self, k)!r}')
        check_positive(self, ('eps', 'eps_teacher', 'lr', 'sinkhorn_tol', 'siglip_scale_init',
                              'prior_temperature'), 'SOTAlignConfig')
        check_nonneg(self, ('alpha', 'weight_decay', 'otp_lambda', 'anchor_weight',
                            'cca_ridge', 'prior_floor'), 'SOTAlignConfig')
        if not math.isfinite(self.siglip_bias_init):
            raise ValueError(f'SOTAlignConfig.siglip_bias_init must be finite, got '
                             f'{self.siglip_bias_init!r}')
        check_int(self, ('steps', 'otp_iters', 'semi_iters'), 0, 'SOTAlignConfig')
        check_int(self, ('batch_size', 'sinkhorn_iters', 'teacher_sinkhorn_iters', 'em_rows',
                         'pool_size', 'chunk_size'), 1, 'SOTAlignConfig')
        check_int(self, ('cv_folds',), 2, 'SOTAlignConfig')
        if self.cca_dim is not None:
            check_int(self, ('cca_dim',), 1, 'SOTAlignConfig')
        if self.prior_floor > 1:
            raise ValueError(f'SOTAlignConfig.prior_floor must lie in [0, 1], got '
                             f'{self.prior_floor}')
        if not isinstance(self.gpua, dict):
            raise ValueError(f'SOTAlignConfig.gpua must be a dict of GPUAConfig fields, got '
                             f'{type(self.gpua).__name__}')
        self.gpua_config().validate()

    def gpua_config(self) -> GPUAConfig:
        """The :class:`GPUAConfig` of the CLIP-aware path: stage 1's pool is SOTAlign's
        (``pool_size`` rows), chunks and device shared, everything else GPUA's defaults (with
        ``gpua`` overrides), so the ``'gpua'`` candidate is the map a plain GPUA fit gives --
        refinement included."""
        known = set(GPUAConfig.__dataclass_fields__)
        unknown = sorted(set(self.gpua) - known)
        if unknown:
            raise ValueError(f'SOTAlignConfig.gpua has unknown GPUAConfig fields {unknown}')
        base = dict(sinkhorn_rows=self.pool_size, chunk_size=self.chunk_size,
                    device=self.device)
        return GPUAConfig(**dict(base, **self.gpua))


def _inv_sqrt(C: Tensor, ridge: float) -> Tensor:
    e, V = torch.linalg.eigh(C)
    return (V * (e.clamp_min(0) + ridge).rsqrt()) @ V.T


class Teacher:
    """Linear teacher fitted on centred, normalised pairs; gives affinities ``K* [n, K]``."""

    def __init__(self, A: Tensor, B: Tensor, cfg: SOTAlignConfig):
        self.mu_a, self.mu_b = A.mean(0), B.mean(0)
        Ac, Bc = l2n(A - self.mu_a), l2n(B - self.mu_b)
        self.W0 = polar(Ac.double().T @ Bc.double()).float()
        self.kind = cfg.teacher
        if self.kind == 'cca':
            n = Ac.shape[0]
            Ad, Bd = Ac.double(), Bc.double()
            ia = _inv_sqrt(Ad.T @ Ad / n, cfg.cca_ridge)
            ib = _inv_sqrt(Bd.T @ Bd / n, cfg.cca_ridge)
            U, _, Vh = torch.linalg.svd(ia @ (Ad.T @ Bd / n) @ ib, full_matrices=False)
            d = cfg.cca_dim or min(A.shape[1], B.shape[1])
            self.Wx = (ia @ U[:, :d]).float()
            self.Wy = (ib @ Vh.T[:, :d]).float()

    def affinity(self, X: Tensor, T: Tensor) -> Tensor:
        Xc, Tc = l2n(X - self.mu_a), l2n(T - self.mu_b)
        if self.kind == 'cca':
            return l2n(Xc @ self.Wx) @ l2n(Tc @ self.Wy).T
        return l2n(Xc @ self.W0) @ Tc.T


class _Lion(torch.optim.Optimizer):
    """Lion (sign of interpolated momentum); small and dependency-free."""

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            b1, b2 = group['betas']
            for p in group['params']:
                if p.grad is None:
                    continue
                m = self.state.setdefault(p, {}).setdefault('m', torch.zeros_like(p))
                p.mul_(1 - group['lr'] * group['weight_decay'])
                p.add_(torch.sign(m * b1 + p.grad * (1 - b1)), alpha=-group['lr'])
                m.mul_(b2).add_(p.grad, alpha=1 - b2)


def _pair_loss(u: Tensor, T: Tensor, y: Tensor, kind: str, log_scale: Tensor,
               bias: Tensor) -> Tensor:
    cos = u @ T.T                                                     # [n, K]
    if kind == 'cosine':
        return (1 - cos.gather(1, y[:, None])).mean()
    sign = -torch.ones_like(cos)
    sign.scatter_(1, y[:, None], 1.0)
    return -F.logsigmoid(sign * (log_scale.exp() * cos + bias)).sum(1).mean()


def _anchor_stat(A: Tensor, y: Tensor, K: int, cfg: SOTAlignConfig) -> Tensor:
    """Procrustes statistic ``[dv, K]`` of the labelled pairs as class-balanced anchors.

    Every labelled class gets the same total weight, ``anchor_weight * n / C`` unpaired-row
    equivalents (n pairs over C labelled classes), however many pixels its masks have: one big
    labelled region must not drown the other classes.  The unit is one unpaired row: a single
    patch is as noisy as any other, so a pair is worth a few unpaired rows (its label is sure),
    not a whole class's mass."""
    cnt = torch.bincount(y, minlength=K).double()
    n_cls = int((cnt > 0).sum())
    w = (cfg.anchor_weight * y.numel() / max(n_cls, 1)) / cnt[y]
    onehot = torch.zeros(A.shape[0], K, dtype=torch.float64, device=A.device)
    onehot[torch.arange(A.shape[0], device=A.device), y] = w
    return A.double().T @ onehot


def _em_prior(X: Tensor, W: Tensor, T: Tensor, b: Tensor, cfg: SOTAlignConfig,
              steps: int = 5) -> Tensor:
    """EM mixture weights of the classes under the map ``W`` (posterior softmax(z cos + log b))."""
    L = cfg.prior_temperature * (l2n(X @ W) @ T.T)
    for _ in range(steps):
        b = torch.softmax(L + b.clamp_min(1e-30).log(), dim=1).mean(0)
        b = b.clamp_min(cfg.prior_floor / T.shape[0])
        b = b / b.sum()
    return b


def _refine_klot(W0, A, y, pool, T, teacher, prior, cfg, seed):
    W = torch.nn.Parameter(W0.clone())
    log_scale = torch.nn.Parameter(torch.tensor(float(cfg.siglip_scale_init)).log().to(W0))
    bias = torch.nn.Parameter(torch.tensor(float(cfg.siglip_bias_init)).to(W0))
    params = [W, log_scale, bias]
    opt = (_Lion(params, lr=cfg.lr, weight_decay=cfg.weight_decay) if cfg.optimizer == 'lion'
           else torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.steps, 1))
    g = torch.Generator().manual_seed(seed + 29)
    bs = max(1, min(cfg.batch_size, pool.shape[0]))
    history = []
    for step in range(cfg.steps):
        idx = torch.randperm(pool.shape[0], generator=g)[:bs].to(pool.device)
        X = pool[idx]
        with torch.no_grad():
            K_star = teacher.affinity(X, T)
        loss_pair = _pair_loss(l2n(A @ W), T, y, cfg.pair_loss, log_scale, bias)
        log_now = step % max(1, cfg.steps // 10) == 0 or step == cfg.steps - 1
        stats = {} if log_now else None
        loss_ot = klot(l2n(X @ W) @ T.T, K_star, eps=cfg.eps, eps_star=cfg.eps_teacher,
                       b=prior, n_iters=cfg.sinkhorn_iters, tol=cfg.sinkhorn_tol,
                       n_iters_star=cfg.teacher_sinkhorn_iters, stats=stats)
        stiefel_step(loss_pair + cfg.alpha * loss_ot, W, opt, sched)
        if log_now:
            history.append(dict(step=step, pair=float(loss_pair.detach()),
                                klot=float(loss_ot.detach()), **stats))
    return W.detach(), history


def _refine_ot_procrustes(W0, A, y, pool, T, prior, cfg, anchor=None):
    """Alternate P = Sinkhorn(cos(X W, T)) and W = polar(pairs + lambda * sum X^T (nP) T).

    The pair term is ``anchor @ T`` when a class-balanced anchor statistic is given, else the
    per-pair ``A^T T_y``.  With ``class_prior='adaptive'`` the column marginal is re-estimated
    after every alternation (EM under the current map) instead of staying fixed."""
    K = T.shape[0]
    T64 = T.double()
    M_pairs = anchor @ T64 if anchor is not None else A.double().T @ T[y].double()
    W = W0
    b = prior
    adaptive = cfg.class_prior == 'adaptive'
    if adaptive and b is None:
        b = torch.full((K,), 1.0 / K, device=T.device)
    history = []
    for it in range(cfg.otp_iters):
        M = M_pairs.clone()
        for s in range(0, pool.shape[0], cfg.batch_size):
            X = pool[s:s + cfg.batch_size]
            P = sinkhorn(l2n(X @ W) @ T.T, b=b, eps=cfg.eps, n_iters=cfg.sinkhorn_iters,
                         tol=cfg.sinkhorn_tol) * X.shape[0]
            M += cfg.otp_lambda * (X.double().T @ (P.double() @ T64))
        W_new = polar(M).float()
        change = float((W_new - W).norm() / W.shape[1] ** 0.5)
        W = W_new
        if adaptive:
            b = _em_prior(pool[:cfg.em_rows], W, T, b, cfg)
        history.append(dict(iter=it, change=change))
        if change < 1e-6:
            break
    return W, history


def _folds(n: int, k: int, seed: int) -> List[Tensor]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 41))
    return [perm[i::k] for i in range(min(k, n))]


def _select(cands: List[Tuple[str, Any]], A: Tensor, y: Tensor, T: Tensor,
            cfg: SOTAlignConfig, seed: int):
    """Cross-validated choice among candidate fitters ``fn(A_train, y_train) -> W``.

    Each candidate is refitted on the pairs outside a fold and scored on the fold (accuracy of
    ``argmax cos(a W, T)``); the candidate with the most held-out hits wins, earlier ones win ties
    (they are listed from the most to the least ambitious).  Returns (name, scores)."""
    n = A.shape[0]
    folds = _folds(n, cfg.cv_folds, seed)
    scores = {}
    for name, fn in cands:
        hits = 0
        for f in folds:
            keep = torch.ones(n, dtype=torch.bool, device=A.device)
            keep[f.to(A.device)] = False
            if int(keep.sum()) < 1:
                continue
            W = fn(A[keep], y[keep])
            hits += int(((l2n(A[f] @ W) @ T.T).argmax(1) == y[f]).sum())
        scores[name] = hits / n
    best = max(scores.values())
    return next(nm for nm, _ in cands if scores[nm] == best), scores


def _unpaired_stream(unpaired_vfm, unpaired_clip, dv: int, dc: int, cfg: SOTAlignConfig,
                     device):
    """FeatureStream over ``(vfm,)`` or ``(vfm, clip)`` and whether CLIP features are present.

    A callable source that yields ``(vfm_chunk, clip_chunk)`` tuples carries CLIP features."""
    is_source = callable(unpaired_vfm) and not isinstance(unpaired_vfm, torch.Tensor)
    if is_source:
        if unpaired_clip is not None:
            raise ValueError('unpaired_clip must be None when unpaired_vfm is a chunk source '
                             '(let the source yield (vfm_chunk, clip_chunk) pairs instead)')
        first = next(iter(unpaired_vfm()), None)
        if first is None:
            raise ValueError('unpaired_vfm (a chunk source) yielded no chunks')
        with_clip = isinstance(first, (tuple, list)) and len(first) == 2
        dims, names = ((dv, dc), ('unpaired_vfm', 'unpaired_clip')) if with_clip else \
            ((dv,), ('unpaired_vfm',))
        feats = unpaired_vfm
    else:
        unpaired_vfm = check_matrix('unpaired_vfm', unpaired_vfm, dim=dv)
        with_clip = unpaired_clip is not None
        if with_clip:
            unpaired_clip = check_matrix('unpaired_clip', unpaired_clip, dim=dc)
            if unpaired_clip.shape[0] != unpaired_vfm.shape[0]:
                raise ValueError(f'unpaired_clip has {unpaired_clip.shape[0]} rows but '
                                 f'unpaired_vfm has {unpaired_vfm.shape[0]}: pass the CLIP '
                                 'features of the same unpaired patches, row by row')
            feats, dims, names = ((unpaired_vfm, unpaired_clip), (dv, dc),
                                  ('unpaired_vfm', 'unpaired_clip'))
        else:
            feats, dims, names = (unpaired_vfm,), (dv,), ('unpaired_vfm',)
    return FeatureStream(feats, dims=dims, names=names, chunk_size=cfg.chunk_size,
                         device=device), with_clip


def fit_sotalign(pair_vfm: Tensor, pair_labels, unpaired_vfm, prototypes: Tensor,
                 config: Optional[SOTAlignConfig] = None, seed: int = 0,
                 unpaired_clip: Optional[Tensor] = None,
                 vocabulary: Optional[Sequence] = None,
                 meta: Optional[Dict[str, Any]] = None) -> AlignmentMap:
    """Fit an orthogonal map from a few labelled pairs plus unpaired patches.

    Args:
        pair_vfm: VFM features of labelled patches [n, dv] (n >= 2).
        pair_labels: their prototype indices [n] (int, in [0, K)).
        unpaired_vfm: unlabelled VFM features [N, dv], or a callable returning a fresh iterator
            of chunks ``vfm [n_i, dv]`` or ``(vfm [n_i, dv], clip [n_i, dc])``.
        prototypes: text prototypes [K, dc].
        config: :class:`SOTAlignConfig`.  seed: makes the fit deterministic.
        unpaired_clip: CLIP features of the unpaired patches [N, dc] (row by row with
            ``unpaired_vfm``; only with a tensor ``unpaired_vfm``).

    With CLIP features (and ``use_clip``), stage 1 is GPUA's correspondence estimation
    (CLIP + VFM, adaptive marginal) on the unpaired pool; the candidate maps are the pairs'
    Procrustes teacher, the GPUA map, and the semi-supervised map: EM self-training in VFM
    space started from GPUA's plan with the pairs as class-balanced anchors.  Without CLIP
    features the candidates are the teacher and its ``refine`` result.  ``select='cv'`` keeps
    the candidate that cross-validates best on the pairs (so the result does not fall below
    its own teacher when refinement goes wrong).

    Returns:
        :class:`AlignmentMap` with ``W [dv, dc]`` orthogonal; ``meta['history']`` has the
        losses, ``meta['selected']`` / ``meta['cv_accuracy']`` the safeguard's choice.

    Raises:
        ValueError: bad shapes, NaN/Inf rows, labels out of range (message names the argument).
    """
    cfg = config or SOTAlignConfig()
    cfg.validate()
    t_start = time.perf_counter()
    T_raw = check_prototypes(prototypes)
    K, dc = T_raw.shape
    pair_vfm = check_matrix('pair_vfm', pair_vfm, min_rows=2)
    dv = pair_vfm.shape[1]
    y = as_labels('pair_labels', pair_labels, pair_vfm.shape[0], K)
    stream, with_clip = _unpaired_stream(unpaired_vfm, unpaired_clip, dv, dc, cfg,
                                         cfg.device or pair_vfm.device)
    device = stream.device
    T = l2n(T_raw.to(device, torch.float32))
    A = l2n(pair_vfm.to(device, torch.float32))
    y = y.to(device)
    use_clip = with_clip and cfg.use_clip
    timings = {}
    t1 = time.perf_counter()
    prior0 = None
    if use_clip:
        gcfg = cfg.gpua_config()
        gcfg.class_prior = cfg.gpua.get('class_prior',
                                        'adaptive' if cfg.class_prior == 'adaptive' else 'uniform')
        corr, pool_q, pool_P, prior0, n_rows = estimate_correspondence(stream, T, gcfg, seed,
                                                                       timings)
        pool = pool_q[:, dc:]
    else:
        res = _Reservoir(cfg.pool_size, seed)
        for off, chunk in stream:
            res.add(off, l2n(chunk[0]))
        pool = res.result()
        n_rows = stream.n
    if stream.n < K:
        raise ValueError(f'only {stream.n} unpaired rows for K = {K} prototypes: need N >= K')
    timings['pool'] = time.perf_counter() - t1
    if cfg.class_prior == 'pairs':
        prior = torch.bincount(y, minlength=K).float().clamp_min(0.5)
        prior = prior / prior.sum()
    elif cfg.class_prior == 'uniform':
        prior = None
    else:
        prior = prior0
    t1 = time.perf_counter()
    teacher = Teacher(A, T[y], cfg)
    timings['teacher'] = time.perf_counter() - t1
    t1 = time.perf_counter()
    history: List[Dict[str, Any]] = []
    em = pool[:cfg.em_rows]

    def teacher_fn(A_, y_):
        return Teacher(A_, T[y_], cfg).W0

    if use_clip:
        R0 = pool_P[:cfg.em_rows]
        # the 'gpua' candidate is GPUA's own map (Procrustes over the whole stream + hubness
        # refinement), so the safeguard never ends below what GPUA gives without labels
        t2, gt = time.perf_counter(), {}
        W_gpua = gpua_map(stream, corr, pool_q, pool_P, T, gcfg, seed, gt)[0]
        timings['gpua_map'] = time.perf_counter() - t2
        b0 = prior if prior is not None else torch.full((K,), 1.0 / K, device=device)

        def semi_fn(A_, y_):
            anchor = _anchor_stat(A_, y_, K, cfg)
            _, W_, _ = self_train_map(em, R0, T, b0, max(1, cfg.semi_iters),
                                      cfg.prior_temperature, cfg.prior_floor, anchor=anchor,
                                      fixed_prior=cfg.class_prior != 'adaptive')
            return W_

        cands = [('semi', semi_fn), ('gpua', lambda A_, y_: W_gpua), ('teacher', teacher_fn)]
    else:
        def refine_fn(A_, y_, hist=None):
            t_ = Teacher(A_, T[y_], cfg)
            if cfg.refine == 'klot':
                W_, h = _refine_klot(t_.W0, A_, y_, pool, T, t_, _klot_prior(t_.W0), cfg, seed)
            else:
                anchor = _anchor_stat(A_, y_, K, cfg) \
                    if cfg.class_prior == 'adaptive' else None
                W_, h = _refine_ot_procrustes(t_.W0, A_, y_, pool, T, prior, cfg, anchor)
            if hist is not None:
                hist.extend(h)
            return W_

        def _klot_prior(W0_):
            if cfg.class_prior != 'adaptive':
                return prior
            return _em_prior(em, W0_, T, torch.full((K,), 1.0 / K, device=device), cfg, 10)

        cands = [('refined', refine_fn), ('teacher', teacher_fn)]
    cv = {}
    if cfg.select == 'cv':
        selected, cv = _select(cands, A, y, T, cfg, seed)
    else:
        selected = cands[0][0]
    fn = dict(cands)[selected]
    W = fn(A, y, history) if selected == 'refined' else fn(A, y)
    W = polar(W).float()
    timings['refine'] = time.perf_counter() - t1
    timings['total'] = time.perf_counter() - t_start
    info = dict(method='sotalign', config=asdict(cfg), seed=int(seed), n_pairs=int(A.shape[0]),
                n_samples=int(stream.n), dv=int(dv), dc=int(dc), n_prototypes=int(K),
                used_clip=bool(use_clip), selected=selected, cv_accuracy=cv,
                class_prior_used=None if prior is None else prior.tolist(),
                orthogonality_error=orthogonality_error(W), timings_s=timings, history=history,
                torch_version=torch.__version__, package_version=__version__)
    if vocabulary is not None:
        info['vocabulary'] = [v if isinstance(v, str) else list(v) for v in vocabulary]
        info['vocab_hash'] = vocabulary_hash(vocabulary)
    info.update(meta or {})
    return AlignmentMap(W.cpu(), info)
