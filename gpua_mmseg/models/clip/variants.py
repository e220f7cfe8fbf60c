"""Registry of CLIP last-block variants (config key ``clip_mode``).

A variant is a pure function ``fn(block, x, ctx, **cfg) -> tokens`` of the last transformer block's
parameters and its input tokens:

* ``block``: the open_clip ``ResidualAttentionBlock`` (unmodified, never mutated);
* ``x``: its input tokens, batch-first ``[B, 1 + h*w, width]`` (CLS first, then patches row-major);
* ``ctx``: :class:`BlockContext` (grid size, the outputs of blocks 1..L-1 when the variant was
  registered with ``needs_intermediates=True``, the VFM patch tokens of the same crops when it was
  registered with ``needs_vfm=True``);
* returns ``[B, 1 + h*w, width]`` or ``[B, h*w, width]`` (patch tokens only; flagged by
  ``returns_patches_only=True`` at registration).  ``ln_post`` and ``proj`` are applied by the encoder.

Register new ones with ``@register_last_block('name')``; ``list_last_blocks()`` lists the keys.
"""
import inspect
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F


@dataclass
class BlockContext:
    """What a last-block variant may know besides the block and its input tokens.

    grid_size: (h, w) patch grid of the crop.
    feats: outputs of blocks 1..L-1, batch-first ``[B, 1 + h*w, width]`` each (``feats[i]`` is the
        output of block i+1); empty unless the variant asked for them.
    batch_first: layout the open_clip blocks expect when called as modules.
    vfm_tokens: ``[B, hv, wv, dv]`` VFM patch tokens of the same crops (variants registered with
        ``needs_vfm=True``), else ``None``.
    out_grid: set by a variant whose output tokens lie on another grid than ``grid_size``.
    """
    grid_size: Tuple[int, int]
    feats: List[torch.Tensor] = field(default_factory=list)
    batch_first: bool = True
    vfm_tokens: Optional[torch.Tensor] = None
    out_grid: Optional[Tuple[int, int]] = None


@dataclass
class _Entry:
    fn: Callable
    needs_intermediates: bool
    returns_patches_only: bool
    defaults: Dict[str, object]
    needs_vfm: bool = False


_REGISTRY: Dict[str, _Entry] = {}


def register_last_block(name: str, needs_intermediates: bool = False,
                        returns_patches_only: bool = False, needs_vfm: bool = False):
    """Decorator registering ``fn(block, x, ctx, **cfg)`` under ``name`` (must be new).

    ``needs_vfm``: the variant reads ``ctx.vfm_tokens`` (the segmentor then needs ``vfm=``)."""
    def deco(fn):
        if name in _REGISTRY:
            raise ValueError(f'last-block variant {name!r} is already registered')
        params = list(inspect.signature(fn).parameters.values())[3:]
        defaults = {p.name: p.default for p in params
                    if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
        _REGISTRY[name] = _Entry(fn, needs_intermediates, returns_patches_only, defaults,
                                 needs_vfm)
        return fn
    return deco


def list_last_blocks() -> List[str]:
    """Registered variant keys, sorted."""
    return sorted(_REGISTRY)


def mode_needs_vfm(name: str) -> bool:
    """Whether variant ``name`` reads VFM patch tokens (ProxyCLIP)."""
    return get_last_block(name).needs_vfm


def get_last_block(name: str) -> _Entry:
    if name not in _REGISTRY:
        raise ValueError(f'unknown CLIP last-block variant (clip_mode) {name!r}; known: '
                         f'{list_last_blocks()}')
    return _REGISTRY[name]


def check_mode_cfg(name: str, mode_cfg: Optional[dict]) -> dict:
    """Validate the kwargs for variant ``name`` -> a plain dict (unknown keys -> ValueError)."""
    entry = get_last_block(name)
    mode_cfg = dict(mode_cfg or {})
    unknown = sorted(set(mode_cfg) - set(entry.defaults))
    if unknown:
        raise ValueError(f'clip_mode_cfg keys {unknown} are not arguments of clip_mode {name!r}; '
                         f'valid: {sorted(entry.defaults)}')
    return mode_cfg


# ----------------------------------------------------------------------------- attention helpers
def _check_block(block) -> None:
    attn = getattr(block, 'attn', None)
    if not isinstance(attn, torch.nn.MultiheadAttention) or attn.in_proj_weight is None:
        raise ValueError(f'last-block variants need an open_clip ResidualAttentionBlock with a packed '
                         f'nn.MultiheadAttention; got {type(block).__name__}. Use clip_mode="vanilla".')


def qkv_heads(block, x_ln: torch.Tensor):
    """Per-head projections of already layer-normed tokens.

    x_ln: [B, N, width] -> q, k, v each [B, heads, N, head_dim].
    """
    _check_block(block)
    attn = block.attn
    b, n, d = x_ln.shape
    h = attn.num_heads
    qkv = F.linear(x_ln, attn.in_proj_weight, attn.in_proj_bias)
    qkv = qkv.view(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)
    return qkv[0], qkv[1], qkv[2]


def merge_heads_out_proj(block, out: torch.Tensor) -> torch.Tensor:
    """[B, heads, N, head_dim] -> out_proj applied -> [B, N, width]."""
    b, h, n, hd = out.shape
    out = out.transpose(1, 2).reshape(b, n, h * hd)
    return F.linear(out, block.attn.out_proj.weight, block.attn.out_proj.bias)


def self_softmax(t: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(t tᵀ·scale) over the last axis; t [B, heads, N, hd] -> [B, heads, N, N]."""
    return torch.softmax(torch.matmul(t, t.transpose(-1, -2)) * scale, dim=-1)


def _scale(block) -> float:
    return (block.attn.head_dim) ** -0.5


def gaussian_prior(grid_size: Tuple[int, int], std: float, device=None, dtype=None) -> torch.Tensor:
    """NACLIP's neighbourhood prior G [1 + h*w, 1 + h*w] (CLS row/column zero).

    G[p, p'] = exp(-‖pos_p − pos_p'‖² / (2 std²)) with positions in patch units.
    """
    if not std > 0:
        raise ValueError(f'naclip needs a positive gaussian std (patches), got {std}')
    h, w = grid_size
    ii, jj = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float64),
                            torch.arange(w, device=device, dtype=torch.float64), indexing='ij')
    pos = torch.stack([ii.flatten(), jj.flatten()], -1)
    g = torch.exp(-torch.cdist(pos, pos).pow(2) / (2 * std * std))
    out = torch.zeros(h * w + 1, h * w + 1, device=device, dtype=torch.float64)
    out[1:, 1:] = g
    return out.to(dtype or torch.get_default_dtype())


def call_block(block, x: torch.Tensor, batch_first: bool) -> torch.Tensor:
    """Run an unmodified open_clip block on batch-first tokens whatever its own layout."""
    if batch_first:
        return block(x)
    return block(x.transpose(0, 1)).transpose(0, 1)


# ----------------------------------------------------------------------------- the variants
@register_last_block('vanilla')
def vanilla_last_block(block, x, ctx):
    """Unmodified block (attention q·kᵀ, residuals, FFN)."""
    return call_block(block, x, ctx.batch_first)


@register_last_block('maskclip')
def maskclip_last_block(block, x, ctx):
    """MaskCLIP: value path only, out_proj(v(ln_1 x)); no attention, residual or FFN."""
    _, _, v = qkv_heads(block, block.ln_1(x))
    return merge_heads_out_proj(block, v)


@register_last_block('sclip')
def sclip_last_block(block, x, ctx):
    """SCLIP correlative self-attention, A = softmax(q qᵀ s) + softmax(k kᵀ s) (a sum), with the
    block's residuals, layer scales and FFN kept."""
    q, k, v = qkv_heads(block, block.ln_1(x))
    s = _scale(block)
    a = self_softmax(q, s) + self_softmax(k, s)
    x = x + block.ls_1(merge_heads_out_proj(block, torch.matmul(a, v)))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


@register_last_block('clearclip')
def clearclip_last_block(block, x, ctx):
    """ClearCLIP: A = softmax(q qᵀ s), out_proj(A v); no residual, no FFN."""
    q, _, v = qkv_heads(block, block.ln_1(x))
    return merge_heads_out_proj(block, torch.matmul(self_softmax(q, _scale(block)), v))


@register_last_block('naclip')
def naclip_last_block(block, x, ctx, gaussian_std: float = 5.0):
    """NACLIP: A = softmax(k kᵀ s + G), G a Gaussian prior over the patch grid (std in patches);
    no residual, no FFN."""
    _, k, v = qkv_heads(block, block.ln_1(x))
    g = gaussian_prior(ctx.grid_size, gaussian_std, device=k.device, dtype=k.dtype)
    a = torch.softmax(torch.matmul(k, k.transpose(-1, -2)) * _scale(block) + g, dim=-1)
    return merge_heads_out_proj(block, torch.matmul(a, v))
