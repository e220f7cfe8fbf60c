"""ProxyCLIP last block (Lan et al., ECCV 2024): CLIP's last attention replaced by a *proxy
attention* computed from a vision foundation model's (DINOv3 / DINOv2 / DINO) patch tokens.

Per image, with ``f_m`` the L2-normalised VFM patch tokens of the crop (``m`` over the VFM grid
``hv x wv``) and ``v`` the value projections of the block's ``ln_1`` input (CLIP grid ``h x w``):

1. ``S = f fᵀ`` (cosine matrix, ``[M, M]``, ``M = hv*wv``);
2. adaptive normalisation and masking: ``S <- gamma * (S - beta * mean(S))`` (``mean`` over the
   whole matrix of this image), entries ``< 0`` set to ``-inf``;
3. ``A = softmax(S)`` row-wise, shared by all heads;
4. the value patch tokens (CLS dropped) are bilinearly resampled from the CLIP grid to the VFM
   grid (``align_corners=False``; the identity when both grids agree);
5. ``out = out_proj(A v)``: no residual, no FFN, no CLS.

Returns patch tokens on the *VFM* grid, ``[B, hv*wv, width]`` (``ctx.out_grid = (hv, wv)``);
``ln_post`` and ``proj`` are then applied by the encoder, so the patch features and logits live on
the VFM grid (finer than CLIP's for a patch-14 DINOv2 or a patch-8 DINO).

Deviations from the public code, none visible where that code is correct (square crops, batch 1):
the statistics are per image (the reference averages over the whole batch, which is one crop
there); non-square crops keep their (h, w) orientation (the reference transposes the CLIP value
grid and reshapes the logits to (H/p, H/p)); a row whose diagonal entry falls below zero (only for
degenerate, constant VFM features, where the reference returns NaN) keeps its diagonal, i.e.
the token attends to itself; the similarity is computed in at least fp32.
"""
import torch
import torch.nn.functional as F

from .variants import merge_heads_out_proj, qkv_heads, register_last_block


def proxy_attention(vfm_tokens: torch.Tensor, beta: float = 1.2, gamma: float = 3.0
                    ) -> torch.Tensor:
    """ProxyCLIP's attention weights from VFM tokens.

    Args:
        vfm_tokens: ``[B, hv, wv, dv]`` VFM patch tokens (any scale; normalised here).
        beta: mean-subtraction factor (the mean cosine times ``beta`` is subtracted).
        gamma: temperature factor applied after the subtraction.

    Returns:
        ``[B, M, M]`` row-stochastic attention (``M = hv*wv``), in at least fp32.
    """
    if vfm_tokens.ndim != 4:
        raise ValueError(f'proxyclip needs VFM tokens [B, hv, wv, dv], got '
                         f'{tuple(vfm_tokens.shape)}')
    work = torch.promote_types(vfm_tokens.dtype, torch.float32)
    f = F.normalize(vfm_tokens.flatten(1, 2).to(work), dim=-1)          # [B, M, dv]
    sim = torch.matmul(f, f.transpose(-1, -2))                           # [B, M, M]
    sim = (sim - beta * sim.mean(dim=(-2, -1), keepdim=True)) * gamma
    # Off-diagonal cosines never exceed the diagonal's 1, so keeping the diagonal changes nothing
    # unless the whole row would be masked (and softmax would return NaN).
    eye = torch.eye(sim.shape[-1], dtype=torch.bool, device=sim.device)
    sim = sim.masked_fill((sim < 0) & ~eye, float('-inf'))
    return torch.softmax(sim, dim=-1)


@register_last_block('proxyclip', returns_patches_only=True, needs_vfm=True)
def proxyclip_last_block(block, x, ctx, beta: float = 1.2, gamma: float = 3.0):
    """ProxyCLIP: out_proj(A v) with A the proxy attention of the VFM tokens (module doc)."""
    if ctx.vfm_tokens is None:
        raise ValueError("clip_mode='proxyclip' needs the VFM patch tokens of the same crops: "
                         'give the segmentor vfm=dict(name=..., pretrained=...)')
    if not gamma > 0:
        raise ValueError(f'proxyclip gamma must be > 0, got {gamma}')
    vfm = ctx.vfm_tokens
    if vfm.shape[0] != x.shape[0]:
        raise ValueError(f'proxyclip: {vfm.shape[0]} VFM token maps for {x.shape[0]} crops')
    _, _, v = qkv_heads(block, block.ln_1(x))                           # [B, heads, 1+N, hd]
    b, heads, _, hd = v.shape
    h, w = ctx.grid_size
    hv, wv = int(vfm.shape[1]), int(vfm.shape[2])
    v = v[:, :, 1:]
    if (hv, wv) != (h, w):
        grid = v.reshape(b * heads, h, w, hd).permute(0, 3, 1, 2)
        work = torch.promote_types(grid.dtype, torch.float32)
        grid = F.interpolate(grid.to(work), size=(hv, wv), mode='bilinear', align_corners=False)
        v = grid.to(v.dtype).permute(0, 2, 3, 1).reshape(b, heads, hv * wv, hd)
    attn = proxy_attention(vfm.to(v.device), beta, gamma).to(v.dtype)   # [B, M, M]
    ctx.out_grid = (hv, wv)
    return merge_heads_out_proj(block, torch.matmul(attn[:, None], v))
