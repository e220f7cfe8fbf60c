"""EM self-training of an orthogonal map and of the class marginal in VFM space (pure torch).

Used by GPUA's adaptive class prior (:mod:`.gpua`) and by SOTAlign's semi-supervised map
(:mod:`.sotalign`).  The Procrustes solves work in the K-dimensional span of the prototypes, so
no ``[dv, dc]`` map is formed inside the iterations.
"""
from typing import Optional

import torch

from ._checks import flush_subnormal_
from .linalg import polar

Tensor = torch.Tensor


def procrustes_cosines(v_hat: Tensor, R: Tensor, RT: Tensor,
                        anchor: Optional[Tensor] = None) -> Tensor:
    """``(cos(v_hat W, T) [n, K], G [dv, K])`` for unit rows ``v_hat``, with
    ``W = polar(G T)``, ``G = v_hat^T (w R) + anchor``, ``w = max_k R_pk`` and ``T^T = Q RT``
    (thin QR); W is never formed (see :func:`self_train_map`)."""
    w = R.max(1).values
    G = (v_hat.T @ (R * w[:, None])).double()
    if anchor is not None:
        G = G + anchor
    U, _, Vh = torch.linalg.svd(G @ RT.T, full_matrices=False)
    return v_hat @ (U @ (Vh @ RT)).float(), G


def self_train_map(v_hat: Tensor, R: Tensor, T: Tensor, prior: Tensor, steps: int,
                   temperature: float, floor: float, anchor: Optional[Tensor] = None,
                   fixed_prior: bool = False, return_map: bool = True):
    """EM self-training of an orthogonal map and of the class marginal in VFM space.

    Alternates ``W = polar(v_hat^T (w * R) T + anchor T)`` (weighted Procrustes on the soft
    assignments ``R``, weights ``w = max_k R_pk``), ``R = softmax(temperature * cos(v_hat W, T)
    + log b)`` (the posterior under mixture weights ``b``) and ``b = mean_p R_p`` (the EM update
    of the mixture weights, floored at ``floor / K``).

    The iterations never form the ``[dv, dc]`` map.  With ``T^T = Q R_T`` (thin QR) the
    Procrustes matrix is ``M = G T = (G R_T^T) Q^T``, so the SVD of the small ``B = G R_T^T
    [dv, K]`` gives M's singular vectors, and ``v_hat W T^T = v_hat U V^T R_T`` exactly (the
    completion of a rank-K polar factor is orthogonal to the prototypes).  The cosine uses
    ``||v_hat W|| = ||v_hat|| = 1``: exact when dv <= dc; when dv > dc the true norm depends
    on the arbitrary completion of the rank-K polar factor, which this choice ignores.
    Cost per step: two ``[n, dv] x [dv, K]`` GEMMs and a ``[dv, K]`` SVD instead of a
    ``[dv, dc]`` SVD and an ``[n, dv] x [dv, dc]`` GEMM (a 768 x 512 float64 SVD was most of the
    adaptive prior's time).

    Args:
        v_hat: normalised VFM rows [n, dv].   R: initial soft assignments [n, K] (rows sum 1).
        T: normalised prototypes [K, dc].     prior: initial marginal [K] (sums to 1).
        steps: EM steps.   temperature: scale of the cosines (unit: 1 / cosine).
        floor: every class keeps at least ``floor / K`` of the mass.
        anchor: optional extra ``[dv, K]`` Procrustes statistic (labelled pairs).
        fixed_prior: keep ``b = prior`` (no marginal update).
        return_map: form the last step's map ``W`` (one ``[dv, dc]`` SVD); else ``W`` is None.

    Returns:
        ``(b [K], W [dv, dc] or None, R [n, K])``.
    """
    K = T.shape[0]
    b, G = prior.clone(), None
    T64 = T.double()
    Q, RT = torch.linalg.qr(T64.T)                       # T^T = Q RT; Q [dc, r], RT [r, K]
    for _ in range(max(0, int(steps))):
        L, G = procrustes_cosines(v_hat, R, RT, anchor)
        R = flush_subnormal_(torch.softmax(L.mul_(temperature)
                                           + b.clamp_min(1e-30).log(), dim=1))
        if not fixed_prior:
            b = R.mean(0).clamp_min(floor / K)
            b = b / b.sum()
    W = polar(G @ T64).float() if (return_map and G is not None) else None
    return b, W, R
