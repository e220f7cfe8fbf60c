"""Entropic optimal transport: log-domain Sinkhorn (balanced / unbalanced) and the KLOT loss.

Convention: for a score (affinity) matrix ``S [n, m]`` and regularisation ``eps`` the plan solves
``max_P <P, S> + eps * H(P)`` subject to ``P 1 = a`` and ``P^T 1 = b``; it has the form
``log P_ij = S_ij / eps + alpha_i + beta_j``.  Everything runs in the log domain so that small
``eps`` never under/overflows.
"""
from typing import Optional

import torch

from ._checks import check_matrix, flush_subnormal_

Tensor = torch.Tensor


def _marginal(x: Optional[Tensor], n: int, like: Tensor, name: str) -> Tensor:
    if x is None:
        return torch.full((n,), 1.0 / n, dtype=like.dtype, device=like.device)
    x = torch.as_tensor(x, dtype=like.dtype, device=like.device).reshape(-1)
    if x.numel() != n:
        raise ValueError(f'marginal {name} has {x.numel()} entries, expected {n}')
    if bool((x < 0).any()) or not bool(torch.isfinite(x).all()):
        raise ValueError(f'marginal {name} must be finite and non-negative')
    s = x.sum()
    if float(s) <= 0:
        raise ValueError(f'marginal {name} sums to zero')
    return x / s


def sinkhorn(scores: Tensor, a: Optional[Tensor] = None, b: Optional[Tensor] = None,
             eps: float = 0.05, n_iters: int = 50, tol: float = 1e-5,
             rho: Optional[float] = None, return_potentials: bool = False,
             init_beta: Optional[Tensor] = None):
    """Log-domain Sinkhorn.

    Args:
        scores: affinities ``S [n, m]`` (higher = more similar; pass ``-C`` for a cost ``C``).
        a: row marginal [n] (default uniform); normalised to sum 1.
        b: column marginal [m] (default uniform); normalised to sum 1.
        eps: entropic regularisation (same unit as ``scores``).
        n_iters: maximum number of (row, column) update pairs.
        tol: stop when the L1 error of the column marginal falls below ``tol``.
        rho: ``None`` for balanced OT; otherwise the KL relaxation weight of the *column*
            marginal (unbalanced Sinkhorn; rows stay exact).
        return_potentials: also return ``(alpha [n], beta [m])`` with
            ``log P = S / eps + alpha[:, None] + beta[None, :]``.
        init_beta: warm start for ``beta``.

    Returns:
        The plan ``P [n, m]`` (rows sum to ``a``; columns to ``b`` when balanced), or
        ``(P, alpha, beta)``.
    """
    scores = check_matrix('scores', scores)
    if eps <= 0:
        raise ValueError(f'eps must be > 0, got {eps}')
    n, m = scores.shape
    a = _marginal(a, n, scores, 'a')
    b = _marginal(b, m, scores, 'b')
    # Stabilised scaling (Schmitzer 2019): log potentials (alpha, beta) are absorbed into a
    # float64 kernel Kt = exp(L + alpha + beta) and Sinkhorn iterates cheap matrix-vector
    # scalings u, v on it; whenever a scaling leaves [e^-thr, e^thr] it is absorbed into the
    # potentials and the kernel rebuilt.  Same fixed point as log-domain Sinkhorn, but one exp
    # per absorption instead of two log-sum-exps per iteration.  float64 inputs are solved in
    # float64; float32 inputs in float32 (absorption keeps every scaling within e^+-50, far
    # inside float32's range, so accuracy is that of the inputs).
    work = torch.float64 if scores.dtype == torch.float64 else torch.float32
    tiny = torch.finfo(work).tiny
    log_a, log_b = a.to(work).clamp_min(tiny).log(), b.to(work).clamp_min(tiny).log()
    L = scores.to(work) / eps
    beta = (torch.zeros(m, dtype=work, device=L.device) if init_beta is None
            else init_beta.to(L.device, work).clone())
    kappa = 1.0 if rho is None else rho / (rho + eps)
    thr = 50.0
    e_thr = float(torch.tensor(thr, dtype=torch.float64).exp())

    def row_potential(beta_):
        return log_a - torch.logsumexp(L + beta_[None, :], dim=1)

    alpha = row_potential(beta)
    Kt = flush_subnormal_(torch.exp(L + alpha[:, None] + beta[None, :]))
    u = torch.ones(n, dtype=work, device=L.device)
    v = torch.ones(m, dtype=work, device=L.device)
    a64, b64 = log_a.exp(), log_b.exp()
    for it in range(max(1, int(n_iters))):
        u = a64 / (Kt @ v).clamp_min(tiny)
        col = (Kt.T @ u).clamp_min(tiny)
        if rho is None:
            err = float((col * v - b64).abs().sum()) if it % 5 == 0 else None
            v = b64 / col
        else:
            v_new = torch.exp(kappa * (log_b - col.log()) + (kappa - 1.0) * beta)
            err = float((v_new.log() - v.log()).abs().max()) if it % 5 == 0 else None
            v = v_new
        # |log u| > thr without a log pass over u
        if float(torch.maximum(torch.maximum(u.max(), v.max()),
                               torch.minimum(u.min(), v.min()).reciprocal())) > e_thr:
            alpha, beta = alpha + u.log(), beta + v.log()
            Kt = flush_subnormal_(torch.exp(L + alpha[:, None] + beta[None, :]))
            u.fill_(1.0)
            v.fill_(1.0)
        if err is not None and err < tol:
            break
    beta = beta + v.log()
    # final row update so rows are exact (the marginal users rely on most)
    alpha = row_potential(beta)
    P = flush_subnormal_(torch.exp(L + alpha[:, None] + beta[None, :]).to(scores.dtype))
    alpha, beta = alpha.to(scores.dtype), beta.to(scores.dtype)
    if return_potentials:
        return P, alpha, beta
    return P


class _KLOTFunction(torch.autograd.Function):
    """KL(OT_eps*(K*) || OT_eps(K)) with the closed-form gradient (P - P*) / eps w.r.t. K."""

    @staticmethod
    def forward(ctx, K, K_star, a, b, eps, eps_star, n_iters, tol, n_iters_star, stats):
        with torch.no_grad():
            P_star = sinkhorn(K_star, a, b, eps=eps_star, n_iters=n_iters_star, tol=tol)
            P, alpha, beta = sinkhorn(K, a, b, eps=eps, n_iters=n_iters, tol=tol,
                                      return_potentials=True)
            log_P = K / eps + alpha[:, None] + beta[None, :]
            mask = P_star > 0
            value = (P_star[mask] * (P_star[mask].log() - log_P[mask])).sum()
            if stats is not None:
                b_ = _marginal(b, K.shape[1], K, 'b')
                stats['teacher_marginal_err'] = float((P_star.sum(0) - b_).abs().sum())
                stats['student_marginal_err'] = float((P.sum(0) - b_).abs().sum())
        ctx.save_for_backward(P, P_star)
        ctx.eps = eps
        return value

    @staticmethod
    def backward(ctx, grad_out):
        P, P_star = ctx.saved_tensors
        grad_K = grad_out * (P - P_star) / ctx.eps
        return grad_K, None, None, None, None, None, None, None, None, None


def klot(K: Tensor, K_star: Tensor, eps: float = 0.05, eps_star: float = 0.01,
         a: Optional[Tensor] = None, b: Optional[Tensor] = None, n_iters: int = 100,
         tol: float = 1e-6, n_iters_star: Optional[int] = None,
         stats: Optional[dict] = None) -> Tensor:
    """KLOT loss of SOTAlign: ``KL( OT_{eps*}(K*) || OT_eps(K) )``.

    Args:
        K: student affinities [n, m] (differentiable).
        K_star: teacher affinities [n, m] (treated as a constant).
        eps, eps_star: entropic regularisation of the student / teacher plan.
        a, b: marginals (default uniform).
        n_iters, tol: Sinkhorn budget of the student plan.
        n_iters_star: Sinkhorn budget of the teacher plan (default ``n_iters``); the teacher's
            small ``eps_star`` needs many more iterations to meet its marginals.
        stats: optional dict, filled with the L1 column-marginal errors of both plans
            (``teacher_marginal_err``, ``student_marginal_err``).

    Returns:
        A scalar >= 0.  Its gradient w.r.t. ``K`` is ``(OT_eps(K) - OT_eps*(K*)) / eps``,
        computed explicitly (Sinkhorn iterations are not back-propagated, so memory stays O(nm)).
    """
    if K.shape != K_star.shape:
        raise ValueError(f'K {tuple(K.shape)} and K_star {tuple(K_star.shape)} must match')
    return _KLOTFunction.apply(K, K_star.detach(), a, b, float(eps), float(eps_star),
                               int(n_iters), float(tol),
                               int(n_iters if n_iters_star is None else n_iters_star), stats)
