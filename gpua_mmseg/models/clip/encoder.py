"""``CLIPEncoder``: dense patch features from an unmodified open_clip ViT with a swappable last block.

Forward (our own, over ``model.visual``'s modules): conv1 -> CLS token -> positional embedding
(bicubically interpolated when the crop's grid is not the native one) -> ln_pre -> blocks 1..L-1
unchanged -> last block replaced by the ``clip_mode`` variant (see ``variants.py``) -> ln_post ->
proj on the patch tokens.

Quick start for tests (tiny random CLIP, no download)::

    from gpua_mmseg.models.clip import build_clip_encoder, tiny_clip_model_cfg
    enc = build_clip_encoder(dict(name='tiny', pretrained=None, model_cfg=tiny_clip_model_cfg()),
                             mode='sclip')
    feats = enc.patch_features(enc.normalize(torch.rand(2, 3, 64, 48)))   # [2, 4, 3, 32]
"""
from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .loading import create_open_clip
from .variants import BlockContext, call_block, check_mode_cfg, get_last_block


class CLIPEncoder(nn.Module):
    """Wraps an open_clip ``CLIP`` (kept whole and unmodified in ``self.model``).

    Attributes: ``patch_size`` (pixels), ``embed_dim`` (dc, joint space), ``width`` (ViT width),
    ``mean``/``std`` buffers [3] for 0..1 RGB images, ``mode``/``mode_cfg`` (last-block variant),
    ``info`` (how the weights were loaded).
    """

    def __init__(self, model: nn.Module, mode: str = 'vanilla', mode_cfg: Optional[dict] = None,
                 mean=None, std=None, info: Optional[dict] = None, tokenizer=None):
        super().__init__()
        visual = getattr(model, 'visual', None)
        for attr in ('conv1', 'class_embedding', 'positional_embedding', 'ln_pre', 'transformer',
                     'ln_post', 'proj'):
            if getattr(visual, attr, None) is None:
                raise ValueError(f'CLIPEncoder needs an open_clip ViT vision tower with {attr!r}; '
                                 f'got {type(visual).__name__}')
        if getattr(visual, 'attn_pool', None) is not None:
            raise ValueError('open_clip ViTs with attentional pooling are not supported')
        self.model = model
        self.mode = mode
        self.mode_cfg = check_mode_cfg(mode, mode_cfg)
        self._variant = get_last_block(mode)
        ps = visual.patch_size
        ps = ps if isinstance(ps, (tuple, list)) else (ps, ps)
        if ps[0] != ps[1]:
            raise ValueError(f'non-square patches {tuple(ps)} are not supported')
        self.patch_size = int(ps[0])
        self.embed_dim = int(visual.proj.shape[1])
        self.width = int(visual.proj.shape[0])
        self.native_grid = tuple(int(g) for g in visual.grid_size)
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
        mean = OPENAI_DATASET_MEAN if mean is None else mean
        std = OPENAI_DATASET_STD if std is None else std
        self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer('std', torch.tensor(std, dtype=torch.float32), persistent=False)
        self.info = dict(info or {})
        self._tokenizer = tokenizer

    # ------------------------------------------------------------------ images
    def normalize(self, images01: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] RGB in 0..1 -> normalised with CLIP's mean/std (dtype of the input)."""
        if images01.ndim != 4 or images01.shape[1] != 3:
            raise ValueError(f'normalize expects [B, 3, H, W] RGB images in 0..1, got '
                             f'{tuple(images01.shape)}')
        mean = self.mean.to(images01.device, images01.dtype)[:, None, None]
        std = self.std.to(images01.device, images01.dtype)[:, None, None]
        return (images01 - mean) / std

    def pos_embed(self, grid_size, dtype=None) -> torch.Tensor:
        """Positional embedding [1 + h*w, width] for a (h, w) patch grid (bicubic resize if needed)."""
        pe = self.model.visual.positional_embedding
        h, w = grid_size
        if (h, w) == self.native_grid:
            return pe if dtype is None else pe.to(dtype)
        gh, gw = self.native_grid
        patch = pe[1:].reshape(1, gh, gw, -1).permute(0, 3, 1, 2)
        # Interpolate in at least fp32: bicubic in fp16 loses visible precision.
        work = torch.promote_types(patch.dtype, torch.float32)
        patch = F.interpolate(patch.to(work), size=(h, w), mode='bicubic', align_corners=False)
        patch = patch.permute(0, 2, 3, 1).reshape(h * w, -1).to(pe.dtype)
        out = torch.cat([pe[:1], patch], 0)
        return out if dtype is None else out.to(dtype)

    def _tokens_in(self, images: torch.Tensor):
        visual = self.model.visual
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f'patch_features expects normalised [B, 3, H, W] images, got '
                             f'{tuple(images.shape)}')
        H, W = images.shape[-2:]
        p = self.patch_size
        if H % p or W % p or H < p or W < p:
            raise ValueError(f'image size {H}x{W} is not a positive multiple of the CLIP patch size '
                             f'{p}; pad or resize the crop to a multiple of {p}')
        w = visual.conv1.weight
        x = visual.conv1(images.to(device=w.device, dtype=w.dtype))     # [B, width, h, w]
        b, d, gh, gw = x.shape
        x = x.flatten(2).transpose(1, 2)                                    # [B, h*w, width]
        cls = visual.class_embedding.to(x.dtype).expand(b, 1, d)
        x = torch.cat([cls, x], 1) + self.pos_embed((gh, gw), x.dtype)
        return visual.ln_pre(x), (gh, gw)

    @property
    def needs_vfm(self) -> bool:
        """Whether the last-block variant reads VFM patch tokens (``clip_mode='proxyclip'``)."""
        return self._variant.needs_vfm

    def _run(self, images: torch.Tensor, vfm_tokens: Optional[torch.Tensor]):
        x, grid = self._tokens_in(images)
        if self._variant.needs_vfm and vfm_tokens is None:
            raise ValueError(f'clip_mode={self.mode!r} needs the VFM patch tokens of the same '
                             'images: patch_features(images, vfm_tokens=[B, hv, wv, dv])')
        blocks = self.model.visual.transformer.resblocks
        batch_first = getattr(self.model.visual.transformer, 'batch_first', True)
        keep = self._variant.needs_intermediates
        feats: List[torch.Tensor] = []
        if not batch_first:
            x = x.transpose(0, 1)
        for blk in blocks[:-1]:
            x = blk(x)
            if keep:
                feats.append(x if batch_first else x.transpose(0, 1))
        if not batch_first:
            x = x.transpose(0, 1)
        ctx = BlockContext(grid_size=grid, feats=feats, batch_first=batch_first,
                           vfm_tokens=vfm_tokens if self._variant.needs_vfm else None)
        return self._variant.fn(blocks[-1], x, ctx, **self.mode_cfg), ctx

    def forward_tokens(self, images: torch.Tensor,
                       vfm_tokens: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Normalised [B, 3, H, W] -> last-block output tokens before ln_post.

        ``vfm_tokens`` ``[B, hv, wv, dv]``: VFM patch tokens of the same images, required by
        (and only passed to) variants that need them (:attr:`needs_vfm`).
        Returns [B, 1 + h*w, width] or, for variants that only produce patches, [B, n, width].
        """
        return self._run(images, vfm_tokens)[0]

    def patch_features(self, images: torch.Tensor,
                       vfm_tokens: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Normalised [B, 3, H, W] -> [B, h, w, dc] patch embeddings (ln_post, proj; not L2-normed).

        ``(h, w) = (H/p, W/p)``, or the VFM grid ``(hv, wv)`` for a variant working on it
        (ProxyCLIP).  ``vfm_tokens``: see :meth:`forward_tokens`.
        """
        x, ctx = self._run(images, vfm_tokens)
        gh, gw = ctx.out_grid or ctx.grid_size
        if not self._variant.returns_patches_only:
            x = x[:, 1:]
        visual = self.model.visual
        x = visual.ln_post(x) @ visual.proj.to(x.dtype)
        return x.reshape(x.shape[0], gh, gw, -1)

    forward = patch_features

    # ------------------------------------------------------------------ text
    def tokenize(self, texts: List[str]) -> torch.Tensor:
        """list[str] -> [T, context_length] long tokens (on CPU)."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise ValueError('tokenize expects a list of strings')
        if self._tokenizer is None:
            from open_clip.tokenizer import SimpleTokenizer
            self._tokenizer = SimpleTokenizer(context_length=int(self.model.context_length))
        return self._tokenizer(list(texts))

    def token_count(self, text: str) -> Optional[int]:
        """Tokens ``text`` takes with start/end-of-text, *before* truncation to the context, or
        None when the tokenizer cannot say (non-BPE tokenizers)."""
        self.tokenize([''])  # builds the default tokenizer if needed
        encode = getattr(self._tokenizer, 'encode', None)
        if encode is None or getattr(self._tokenizer, 'reduction_fn', None) is not None:
            return None
        return len(encode(text)) + 2

    def _text_tower(self) -> Optional[dict]:
        """The text tower's modules as open_clip's ``encode_text`` uses them, or None when the
        short forward does not apply (see :meth:`encode_text`).

        ``CLIP`` keeps them on the model itself, ``CustomTextCLIP`` in ``model.text`` (a
        ``TextTransformer``)."""
        m = self.model
        text = getattr(m, 'text', None)
        if text is not None and hasattr(text, 'transformer'):        # CustomTextCLIP
            if (getattr(text, 'cls_emb', None) is not None or getattr(text, 'use_pad_mask', False)
                    or type(text).forward is not _TEXT_TRANSFORMER_FORWARD):
                return None
            tower = dict(tok=text.token_embedding, pos=text.positional_embedding,
                         transformer=text.transformer, ln=text.ln_final,
                         proj=text.text_projection, mask=text.attn_mask, pool=text.pool_type,
                         eos=getattr(text, 'eos_id', None))
        elif hasattr(m, 'token_embedding') and hasattr(m, 'transformer'):  # CLIP
            if type(m).encode_text is not _CLIP_ENCODE_TEXT:
                return None
            tower = dict(tok=m.token_embedding, pos=m.positional_embedding,
                         transformer=m.transformer, ln=m.ln_final, proj=m.text_projection,
                         mask=getattr(m, 'attn_mask', None), pool=m.text_pool_type,
                         eos=getattr(m, 'text_eos_id', None))
        else:
            return None
        # Only a causal mask makes the tokens after the pooled one irrelevant; 'last' / 'none'
        # pooling read them.
        if tower['mask'] is None or tower['pool'] not in ('argmax', 'eos', 'first'):
            return None
        return tower

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """[T, ctx] int tokens -> [T, dc] text embeddings (not L2-normalised), = open_clip's
        ``model.encode_text(tokens)`` (within float rounding, ~1e-6).

        The tower (unmodified) is run only up to the batch's last pooled position (the
        end-of-text token for CLIP's ``argmax`` pooling) instead of the full context: CLIP's
        text attention is causal, so the padding after it cannot change the pooled token, and
        prompts end long before slot 77 (VOC's longest at 14), ~6x less work.  Towers where that
        does not hold (no causal mask, padding mask, CoCa's appended CLS, 'last' pooling,
        patched forwards) go through open_clip's ``encode_text`` as they are.
        """
        dev = self.model.token_embedding.weight.device if hasattr(self.model, 'token_embedding') \
            else next(self.model.parameters()).device
        tokens = tokens.to(dev)
        tower = self._text_tower()
        if tower is None or tokens.ndim != 2 or tokens.shape[0] == 0:
            return self.model.encode_text(tokens, normalize=False)
        from open_clip.transformer import text_global_pool
        if tower['pool'] == 'argmax':
            pos = tokens.argmax(dim=-1)
        elif tower['pool'] == 'eos':
            pos = (tokens == tower['eos']).int().argmax(dim=-1)
        else:                                                          # 'first'
            pos = tokens.new_zeros(tokens.shape[0])
        n = int(pos.max()) + 1
        text = tokens[:, :n]
        cast = tower['transformer'].get_cast_dtype()
        x = tower['tok'](text).to(cast) + tower['pos'][:n].to(cast)
        x = tower['transformer'](x, attn_mask=tower['mask'][:n, :n])
        x = tower['ln'](x)
        # argmax / eos positions of the cropped rows are those of the full rows (first
        # occurrence, inside the crop by construction of n).
        x = text_global_pool(x, text, tower['pool'], eos_token_id=tower['eos'])
        proj = tower['proj']
        if proj is not None:
            x = proj(x) if isinstance(proj, nn.Linear) else x @ proj
        return x


def _open_clip_text_entry_points():
    from open_clip.model import CLIP
    from open_clip.transformer import TextTransformer
    return CLIP.encode_text, TextTransformer.forward


_CLIP_ENCODE_TEXT, _TEXT_TRANSFORMER_FORWARD = _open_clip_text_entry_points()


def build_clip_encoder(cfg: dict, mode: str = 'vanilla', mode_cfg: Optional[dict] = None
                       ) -> CLIPEncoder:
    """Build a :class:`CLIPEncoder` from the model config's ``clip`` dict.

    cfg keys: ``name`` (open_clip model name, default ``'ViT-B-16'``), ``pretrained`` (tag | file |
    None), optional ``model_cfg`` (custom/tiny architecture, see ``tiny_clip_model_cfg``),
    ``quick_gelu`` (None = automatic), ``mean``/``std`` overrides, ``cache_dir``.
    A tag is first resolved to a local file (:func:`gpua_mmseg.weights.resolve_clip_weights`).

    Raises:
        gpua_mmseg.weights.WeightsNotFoundError: a tag without a local copy while offline.
    """
    if not isinstance(cfg, dict):
        raise ValueError(f'clip config must be a dict like dict(name="ViT-B-16", pretrained="openai"), '
                         f'got {cfg!r}')
    cfg = dict(cfg)
    allowed = {'name', 'pretrained', 'model_cfg', 'quick_gelu', 'mean', 'std', 'cache_dir'}
    unknown = sorted(set(cfg) - allowed)
    if unknown:
        raise ValueError(f'unknown clip config keys {unknown}; allowed: {sorted(allowed)}')
    check_mode_cfg(mode, mode_cfg)  # fail before a possibly slow model build
    name = cfg.get('name', 'ViT-B-16')
    pretrained, quick_gelu = cfg.get('pretrained'), cfg.get('quick_gelu')
    if isinstance(pretrained, str):
        # Local copies first (GPUA_MMSEG_CACHE, HF cache) for every entry point; the hub only
        # when reachable, else WeightsNotFoundError says where to put the file.
        from ...weights import resolve_clip_weights
        pretrained, qg_hint = resolve_clip_weights(name, pretrained)
        if qg_hint and quick_gelu is None:
            quick_gelu = True
    model, info = create_open_clip(name, pretrained, model_cfg=cfg.get('model_cfg'),
                                   quick_gelu=quick_gelu, cache_dir=cfg.get('cache_dir'))
    tokenizer = None
    if cfg.get('model_cfg') is None:
        import open_clip
        tokenizer = open_clip.get_tokenizer(name)  # named models: their own tokenizer
    return CLIPEncoder(model, mode, mode_cfg, mean=cfg.get('mean', info['mean']),
                       std=cfg.get('std', info['std']), info=info, tokenizer=tokenizer)
