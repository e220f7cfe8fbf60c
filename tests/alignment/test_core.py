"""Building blocks: Procrustes, polar/Stiefel, Sinkhorn, KLOT, CSLS."""
import math

import pytest
import torch

from gpua_mmseg.alignment import (csls, klot, orthogonality_error, polar, procrustes,
                                  retract_stiefel, sinkhorn)
from gpua_mmseg.alignment.synthetic import random_orthogonal


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize('dv,dc', [(24, 24), (32, 20), (20, 32)])
def test_procrustes_exact_without_noise(dv, dc):
    Q = random_orthogonal(dv, dc, _g(1))
    A = torch.randn(200, dv, generator=_g(2))
    if dv > dc:
        # for a tall W, ||A W|| is only constant (so max tr = min residual) for isotropic A
        A = torch.linalg.qr(A)[0] * 3.0
    err = (procrustes(A, A @ Q) - Q).norm() / math.sqrt(min(dv, dc))
    assert float(err) < 1e-6
    assert orthogonality_error(procrustes(A, A @ Q)) < 1e-6


def test_procrustes_noise_level_matches_theory():
    d, n, sigma = 32, 4000, 0.1
    Q = random_orthogonal(d, d, _g(3))
    A = torch.randn(n, d, generator=_g(4))
    B = A @ Q + sigma * torch.randn(n, d, generator=_g(5))
    err = float((procrustes(A, B) - Q).norm() / math.sqrt(d))
    expected = sigma * math.sqrt((d - 1) / (2 * n))
    assert 0.6 * expected < err < 1.5 * expected


def test_weighted_procrustes_ignores_zero_weight_rows():
    Q = random_orthogonal(16, 16, _g(6))
    A = torch.randn(100, 16, generator=_g(7))
    B = A @ Q
    B[:30] = torch.randn(30, 16, generator=_g(8))        # corrupted rows
    w = torch.ones(100)
    w[:30] = 0
    assert float((procrustes(A, B, w) - Q).abs().max()) < 1e-5
    assert float((procrustes(A, B) - Q).abs().max()) > 1e-2


def test_retraction_restores_orthogonality_and_is_polar():
    W = random_orthogonal(48, 32, _g(9))
    Wp = W + 1e-2 * torch.randn(48, 32, generator=_g(10))
    R = retract_stiefel(Wp)
    assert orthogonality_error(R) < 1e-5
    assert float((R - polar(Wp)).abs().max()) < 1e-4
    wide = retract_stiefel(Wp.T.contiguous())
    assert orthogonality_error(wide) < 1e-5


def _random_scores(n=30, m=12, seed=0, dtype=torch.float64):
    return torch.randn(n, m, generator=_g(seed), dtype=dtype)


@pytest.mark.parametrize('eps', [1.0, 0.1, 0.02])
def test_sinkhorn_marginals(eps):
    S = _random_scores()
    b = torch.rand(12, generator=_g(1), dtype=torch.float64) + 0.1
    b = b / b.sum()
    P = sinkhorn(S, b=b, eps=eps, n_iters=5000, tol=1e-12)
    assert float((P.sum(1) - 1 / 30).abs().max()) < 1e-10
    assert float((P.sum(0) - b).abs().max()) < 1e-8
    assert bool((P >= 0).all())


def test_sinkhorn_extreme_scores_stay_finite():
    # S / eps spans ~1200 nats: e^-1200 underflows even float64 without log-domain absorption
    S = _random_scores(seed=3) * 20
    P = sinkhorn(S, eps=0.1, n_iters=5000, tol=1e-12)
    assert bool(torch.isfinite(P).all())
    assert float((P.sum(0) - 1 / 12).abs().max()) < 1e-9


def test_sinkhorn_invariant_to_row_and_column_constants():
    S = _random_scores(seed=4)
    shifted = S + torch.randn(30, 1, dtype=S.dtype) * 3 + torch.randn(1, 12, dtype=S.dtype) * 3
    P1 = sinkhorn(S, eps=0.1, n_iters=3000, tol=1e-12)
    P2 = sinkhorn(shifted, eps=0.1, n_iters=3000, tol=1e-12)
    assert float((P1 - P2).abs().max()) < 1e-9


def test_unbalanced_sinkhorn_rows_exact_columns_relaxed():
    S = _random_scores(seed=5)
    b = torch.full((12,), 1 / 12, dtype=torch.float64)
    Pb = sinkhorn(S, b=b, eps=0.1, n_iters=3000, tol=1e-12)
    Pu = sinkhorn(S, b=b, eps=0.1, n_iters=3000, tol=1e-12, rho=0.1)
    assert float((Pu.sum(1) - 1 / 30).abs().max()) < 1e-10
    # a relaxed column marginal moves toward the row-softmax's column mass
    soft = torch.softmax(S / 0.1, 1).sum(0) / 30
    assert float((Pu.sum(0) - soft).abs().sum()) < float((Pb.sum(0) - soft).abs().sum())


def test_klot_value_nonnegative_and_zero_at_teacher():
    K = _random_scores(seed=6)
    assert float(klot(K, K, eps=0.05, eps_star=0.05, n_iters=3000, tol=1e-12)) < 1e-8
    v = klot(K, _random_scores(seed=7), eps=0.05, eps_star=0.01, n_iters=3000, tol=1e-12)
    assert float(v) > 0


def test_klot_gradient_matches_finite_differences():
    K = _random_scores(n=8, m=5, seed=8).requires_grad_(True)
    K_star = _random_scores(n=8, m=5, seed=9)
    kw = dict(eps=0.5, eps_star=0.2, n_iters=20000, tol=1e-14)
    val = klot(K, K_star, **kw)
    val.backward()
    grad = K.grad.clone()
    h = 1e-6
    fd = torch.zeros_like(grad)
    with torch.no_grad():
        for i in range(8):
            for j in range(5):
                Kp, Km = K.detach().clone(), K.detach().clone()
                Kp[i, j] += h
                Km[i, j] -= h
                fd[i, j] = (klot(Kp, K_star, **kw) - klot(Km, K_star, **kw)) / (2 * h)
    assert float((grad - fd).abs().max()) < 1e-6 * max(1.0, float(fd.abs().max()))
    # the sign convention the SOTAlign text gets wrong: dividing by eps* would be off by eps/eps*
    assert float((grad * 0.5 / 0.2 - fd).abs().max()) > 1e-3


def test_klot_plan_invariant_to_constants():
    K = _random_scores(seed=10)
    K_star = _random_scores(seed=11)
    kw = dict(eps=0.1, eps_star=0.05, n_iters=3000, tol=1e-12)
    v1 = klot(K, K_star, **kw)
    v2 = klot(K + 2.0 + torch.randn(30, 1, dtype=K.dtype), K_star + torch.randn(1, 12,
              dtype=K.dtype), **kw)
    assert abs(float(v1 - v2)) < 1e-6 * float(v1)


def test_csls_matches_brute_force():
    x = torch.randn(40, 16, generator=_g(12))
    y = torch.randn(25, 16, generator=_g(13))
    k = 5
    out = csls(x, y, k=k)
    xn = x / x.norm(dim=1, keepdim=True)
    yn = y / y.norm(dim=1, keepdim=True)
    ref = torch.empty(40, 25)
    for i in range(40):
        for j in range(25):
            cos_ij = float(xn[i] @ yn[j])
            r_x_i = sorted((float(xn[i] @ yn[t]) for t in range(25)), reverse=True)[:k]
            r_y_j = sorted((float(xn[s] @ yn[j]) for s in range(40)), reverse=True)[:k]
            ref[i, j] = 2 * cos_ij - sum(r_x_i) / k - sum(r_y_j) / k
    assert float((out - ref).abs().max()) < 1e-5


def _subnormal(x):
    return int(((x != 0) & (x.abs() < torch.finfo(x.dtype).tiny)).sum())


def test_plans_hold_no_subnormal_entries():
    """Sharp plans (eps 0.05, temperature 100) underflow into subnormals, and CPU GEMMs that
    read subnormals run ~50x slower (it made 9/10 of a 1e6-patch fit); every plan / posterior
    that feeds a GEMM in the fit must be flushed."""
    from gpua_mmseg.alignment._checks import l2n
    from gpua_mmseg.alignment.gpua import Correspondence, GPUAConfig, self_train_map
    g = torch.Generator().manual_seed(0)
    n, K, dc, dv = 512, 12, 16, 24
    S = torch.linspace(-5.0, 0.0, K)[None, :].repeat(n, 1) \
        + 0.1 * torch.randn(n, K, generator=g)
    assert _subnormal(torch.softmax(S / 0.05, dim=1)) > 0        # the raw softmax has them
    P = sinkhorn(S, eps=0.05)
    assert _subnormal(P) == 0 and torch.allclose(P.sum(1), torch.full((n,), 1.0 / n))
    T = l2n(torch.randn(K, dc, generator=g))
    c, v = torch.randn(n, dc, generator=g), torch.randn(n, dv, generator=g)
    mu = l2n(torch.randn(K, dc + dv, generator=g))
    corr = Correspondence(T, mu, torch.linspace(-60.0, 0.0, K), GPUAConfig())
    assert _subnormal(corr.plan(c, v)) == 0
    R0 = torch.softmax(torch.randn(n, K, generator=g), 1)
    _, _, R = self_train_map(l2n(v), R0, T, torch.full((K,), 1.0 / K), 2, 100.0, 0.1)
    assert _subnormal(R) == 0
