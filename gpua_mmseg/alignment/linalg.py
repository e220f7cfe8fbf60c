"""Orthogonal maps: Procrustes, polar factors, Stiefel retraction, CSLS (pure torch).

Shapes: a map ``W [dv, dc]`` acts on row vectors, ``y = x @ W``.  "Orthogonal" means
orthonormal columns (``W^T W = I``) when ``dv >= dc`` and orthonormal rows (``W W^T = I``)
when ``dv < dc``; either way the map is an isometry on its domain's relevant subspace.
"""
from typing import Optional

import torch

from ._checks import check_matrix, l2n

Tensor = torch.Tensor


def polar(M: Tensor) -> Tensor:
    """Orthogonal polar factor ``U V^T`` of ``M = U S V^T`` (thin SVD, float64 internally)."""
    U, _, Vh = torch.linalg.svd(M.double(), full_matrices=False)
    return (U @ Vh).to(M.dtype)


def orthogonality_error(W: Tensor) -> float:
    """Max-abs deviation of the Gram matrix from I (``W^T W`` if dv >= dc, else ``W W^T``)."""
    W = W.double()
    G = W.T @ W if W.shape[0] >= W.shape[1] else W @ W.T
    return float((G - torch.eye(G.shape[0], dtype=G.dtype, device=G.device)).abs().max())


def retract_stiefel(W: Tensor, tol: float = 1e-6, max_iters: int = 6) -> Tensor:
    """Project a near-orthogonal ``W`` back onto the Stiefel manifold.

    Newton-Schulz iterations converge quadratically to the polar factor for a small deviation
    (the situation after one optimiser step) and cost two small matmuls each; if they do not
    reach ``tol`` (a large step), fall back to the exact SVD polar factor.
    """
    tall = W.shape[0] >= W.shape[1]
    X = W if tall else W.T
    eye = torch.eye(X.shape[1], dtype=X.dtype, device=X.device)
    for _ in range(max_iters):
        G = X.T @ X
        err = float((G - eye).abs().max())
        if err < tol:
            break
        if err > 0.5:
            return polar(W)
        X = X @ (1.5 * eye - 0.5 * G)
    return X if tall else X.T


def stiefel_step(loss: Tensor, W: Tensor, opt: torch.optim.Optimizer, sched=None,
                 tol: float = 1e-6) -> None:
    """One optimiser step on ``loss`` followed by the retraction of the parameter ``W`` onto the
    Stiefel manifold, so the map stays orthogonal after every step (not only at the end):
    ``max|W^T W - I| < tol`` (checked) after the step."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if sched is not None:
        sched.step()
    with torch.no_grad():
        W.copy_(retract_stiefel(W.detach(), tol=tol))


def procrustes(A: Tensor, B: Tensor, weights: Optional[Tensor] = None) -> Tensor:
    """Orthogonal Procrustes: ``argmin_W ||A W - B||_F`` over orthogonal ``W [dv, dc]``.

    Args:
        A: source rows [n, dv].   B: target rows [n, dc].   weights: optional [n] >= 0.

    Returns:
        ``W = polar(A^T diag(w) B)`` [dv, dc], float32 on A's device.
    """
    A = check_matrix('A', A)
    B = check_matrix('B', B)
    if A.shape[0] != B.shape[0]:
        raise ValueError(f'A and B must have the same number of rows, got {A.shape[0]} and '
                         f'{B.shape[0]}')
    A64, B64 = A.double(), B.double()
    if weights is not None:
        A64 = A64 * torch.as_tensor(weights, dtype=torch.float64, device=A.device).reshape(-1, 1)
    return polar(A64.T @ B64).float()


def csls(x: Tensor, y: Tensor, k: int = 10, r_x: Optional[Tensor] = None,
         r_y: Optional[Tensor] = None) -> Tensor:
    """Cross-domain similarity local scaling (hubness-corrected cosine).

    ``CSLS(x_i, y_j) = 2 cos(x_i, y_j) - r_y(x_i) - r_x(y_j)``, where ``r_y(x_i)`` is the mean
    cosine of ``x_i`` to its ``k`` nearest ``y`` and ``r_x(y_j)`` the mean cosine of ``y_j`` to its
    ``k`` nearest ``x``.

    Args:
        x: queries [n, d].  y: targets [m, d] (e.g. prototypes).  k: neighbourhood size
            (clipped to the available count).
        r_x: optional precomputed ``r_x(y_j)`` [m] (e.g. stored at fit time from the whole
            training set, so inference on a single image is not biased by that image).
        r_y: optional precomputed ``r_y(x_i)`` [n].

    Returns:
        CSLS scores [n, m].
    """
    cos = l2n(x.float()) @ l2n(y.float()).T
    if r_y is None:
        r_y = cos.topk(min(k, cos.shape[1]), dim=1).values.mean(1)
    if r_x is None:
        r_x = cos.topk(min(k, cos.shape[0]), dim=0).values.mean(0)
    return 2 * cos - r_y.reshape(-1, 1) - r_x.reshape(1, -1)
