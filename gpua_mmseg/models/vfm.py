"""Frozen timm vision foundation model (VFM) encoder: DINOv3 / DINOv2 patch tokens.

The wrapped model is an *unmodified* ``timm`` model; this module only decides how it is created,
how its input is normalised and how the patch tokens are cut out of ``forward_features``.

* ``build_vfm_encoder(dict(name=..., pretrained=..., model_kwargs=...))`` -> :class:`VFMEncoder`.
* ``pretrained``: ``True`` (timm's own source, needs the network or a warm HF cache),
  ``False`` / ``None`` (random init: tests, smoke runs) or a local checkpoint path. A local file
  goes through ``pretrained_cfg_overlay=dict(file=path)``, so timm's checkpoint filter converts
  Meta's original DINOv3 key layout (``storage_tokens``, ``ls1.gamma``, ``qkv.bias`` ...) while
  timm-layout files load unchanged. ``.safetensors`` and ``torch.save`` files are accepted.
* The encoder normalises with the model's *own* ``pretrained_cfg`` statistics (ImageNet for
  DINO). CLIP statistics would shift every DINO feature (a bug of the GPUA reference code).
  ``pretrained_cfg_overlay=dict(mean=..., std=...)`` (timm's own mechanism) overrides them for
  weights trained with other statistics (the toy world's VFM).
"""
import hashlib
import math
import os
from typing import Any, Dict, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .sliding import resize_to_patch_multiple

__all__ = ['VFMEncoder', 'build_vfm_encoder', 'VFMWindowTokens', 'check_vfm_window',
           'vfm_windows_of', 'DEFAULT_VFM_MAX_TOKENS']

_CFG_KEYS = ('name', 'pretrained', 'model_kwargs', 'pretrained_cfg_overlay')


def _resolve_checkpoint(name: str, pretrained: Union[bool, str, os.PathLike, None]) -> Optional[str]:
    """Return the absolute local checkpoint path, or ``None`` when no local file is involved.

    Raises:
        FileNotFoundError: ``pretrained`` is a path that is not an existing file.
        ValueError: ``pretrained`` has an unsupported type.
    """
    if pretrained is None or isinstance(pretrained, bool):
        return None
    if not isinstance(pretrained, (str, os.PathLike)):
        raise ValueError(
            f'VFM {name!r}: pretrained must be True, False, None or a checkpoint path, '
            f'got {type(pretrained).__name__} {pretrained!r}')
    path = os.path.abspath(os.path.expanduser(os.fspath(pretrained)))
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f'VFM checkpoint for {name!r} not found: {path} (from pretrained={pretrained!r}). '
            'Download the weights (timm layout or Meta\'s original DINOv3 .pth) and point '
            'vfm.pretrained at the file, or use pretrained=False for random weights.')
    return path


def _check_cfg_overlay(name: str, overlay) -> Dict[str, Any]:
    """Validate ``vfm.pretrained_cfg_overlay`` -> a plain dict (``mean`` / ``std``: 3 numbers,
    ``std`` > 0; the weights file is ``vfm.pretrained``, never ``file`` here)."""
    if overlay is None:
        return {}
    if not isinstance(overlay, dict):
        raise ValueError(f'VFM {name!r}: vfm.pretrained_cfg_overlay must be a dict such as '
                         f'dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)), got {overlay!r}')
    overlay = dict(overlay)
    if 'file' in overlay:
        raise ValueError(f'VFM {name!r}: give the weights file as vfm.pretrained, not '
                         'vfm.pretrained_cfg_overlay.file')
    for key in ('mean', 'std'):
        if key in overlay:
            v = overlay[key]
            ok = isinstance(v, (list, tuple)) and len(v) == 3 and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                and (x > 0 or key == 'mean') for x in v)
            if not ok:
                raise ValueError(f'VFM {name!r}: vfm.pretrained_cfg_overlay.{key} must be 3 '
                                 f'finite numbers{" > 0" if key == "std" else ""} (one per RGB '
                                 f'channel, images in 0..1), got {v!r}')
            overlay[key] = tuple(float(x) for x in v)
    return overlay


def _create_timm_model(name: str, pretrained: Union[bool, str, None], checkpoint: Optional[str],
                       model_kwargs: Dict[str, Any],
                       cfg_overlay: Optional[Dict[str, Any]] = None) -> nn.Module:
    """``timm.create_model`` with clear errors for missing weights and mismatched checkpoints."""
    import timm  # heavy; imported lazily so that importing gpua_mmseg.models stays light

    if not timm.is_model(name):
        raise ValueError(
            f'unknown timm model {name!r} for the VFM; use a timm model name such as '
            "'vit_base_patch16_dinov3.lvd1689m' or 'vit_base_patch14_reg4_dinov2' "
            '(see timm.list_models("*dinov*"))')
    kwargs = dict(model_kwargs)
    if kwargs.get('dynamic_img_size', True) is not True:
        raise ValueError(
            f'VFM {name!r}: dynamic_img_size must stay True (sliding-window crops of any size '
            'are fed to the encoder); remove it from vfm.model_kwargs')
    for key in ('pretrained', 'pretrained_cfg_overlay'):
        if key in kwargs:
            raise ValueError(
                f'VFM {name!r}: set {key!r} through vfm.pretrained, not vfm.model_kwargs')
    kwargs['dynamic_img_size'] = True
    kwargs.setdefault('num_classes', 0)  # only the token features are used; no classifier head
    overlay = dict(cfg_overlay or {})

    if checkpoint is not None:
        try:
            return timm.create_model(name, pretrained=True,
                                     pretrained_cfg_overlay=dict(overlay, file=checkpoint),
                                     **kwargs)
        except (RuntimeError, KeyError, ValueError) as err:
            raise ValueError(
                f'checkpoint {checkpoint} does not fit the timm model {name!r} '
                f'(model_kwargs={model_kwargs}): {err}\nCheck that the file holds weights of '
                'this architecture (timm layout or Meta\'s original DINOv3 layout) and that '
                'vfm.name / vfm.model_kwargs describe the same model size.') from err
    if overlay:
        kwargs['pretrained_cfg_overlay'] = overlay
    if pretrained is True:
        try:
            return timm.create_model(name, pretrained=True, **kwargs)
        except Exception as err:  # network / hub / cache errors come in many types
            raise RuntimeError(
                f'could not fetch pretrained weights for the VFM {name!r} through timm: {err}\n'
                'Without network access, download the checkpoint elsewhere and set '
                "vfm.pretrained='/path/to/file' (.safetensors or .pth).") from err
    return timm.create_model(name, pretrained=False, **kwargs)


class VFMEncoder(nn.Module):
    """Frozen timm ViT (DINOv3 / DINOv2) exposing last-layer patch tokens on their grid.

    Args:
        name: timm model name, e.g. ``'vit_base_patch16_dinov3.lvd1689m'``.
        pretrained: ``True`` | ``False`` | ``None`` | path to a local checkpoint (see module doc).
        model_kwargs: extra keyword arguments for ``timm.create_model`` (e.g. tiny widths for
            tests). ``dynamic_img_size=True`` is always set.
        pretrained_cfg_overlay: optional timm ``pretrained_cfg`` entries, e.g. the ``mean`` /
            ``std`` (RGB, images in 0..1) the weights were trained with.

    Attributes:
        model: the unmodified timm model (frozen, kept in eval mode).
        name, checkpoint: model name and absolute local checkpoint path (``None`` if none).
        patch_size: int, pixels per patch side (16 for DINOv3 B/16, 14 for DINOv2).
        embed_dim: int, token width ``dv`` (768 for ViT-B).
        num_prefix_tokens: CLS + register tokens dropped from the output (5 for DINOv3 B/16).
        mean, std: ``[3]`` buffers for images in 0..1, from the model's ``pretrained_cfg``.
    """

    def __init__(self, name: str, pretrained: Union[bool, str, None] = True,
                 model_kwargs: Optional[Dict[str, Any]] = None,
                 pretrained_cfg_overlay: Optional[Dict[str, Any]] = None):
        super().__init__()
        if not isinstance(name, str) or not name:
            raise ValueError(f'vfm.name must be a non-empty timm model name, got {name!r}')
        if model_kwargs is not None and not isinstance(model_kwargs, dict):
            raise ValueError(f'vfm.model_kwargs must be a dict, got {type(model_kwargs).__name__}')
        self.name = name
        if pretrained is True:  # local copies first (GPUA_MMSEG_CACHE, HF cache), for every entry point
            from ..weights import resolve_vfm_weights
            pretrained = resolve_vfm_weights(name, True)
        self.pretrained = pretrained
        self.checkpoint = _resolve_checkpoint(name, pretrained)
        overlay = _check_cfg_overlay(name, pretrained_cfg_overlay)
        self.model = _create_timm_model(name, pretrained, self.checkpoint, model_kwargs or {},
                                        overlay)
        self.model.requires_grad_(False)
        self.model.eval()

        patch = self.model.patch_embed.patch_size
        patch = tuple(patch) if isinstance(patch, (tuple, list)) else (patch, patch)
        if patch[0] != patch[1]:
            raise ValueError(f'VFM {name!r} has non-square patches {patch}; only square patches '
                             'are supported')
        self.patch_size = int(patch[0])
        self.embed_dim = int(getattr(self.model, 'embed_dim', self.model.num_features))
        self.num_prefix_tokens = int(getattr(self.model, 'num_prefix_tokens', 1))
        cfg = getattr(self.model, 'pretrained_cfg', None) or {}
        if 'mean' not in cfg or 'std' not in cfg:
            raise ValueError(f'timm model {name!r} has no mean/std in its pretrained_cfg; '
                             'cannot normalise its input')
        self.register_buffer('mean', torch.tensor(cfg['mean'], dtype=torch.float32),
                             persistent=False)
        self.register_buffer('std', torch.tensor(cfg['std'], dtype=torch.float32),
                             persistent=False)
        self._sha256: Optional[str] = None

    def train(self, mode: bool = True) -> 'VFMEncoder':
        """Keep the frozen ViT in eval mode: drop-path / dropout must never act on its tokens."""
        super().train(mode)
        self.model.eval()
        return self

    def normalize(self, images01: torch.Tensor) -> torch.Tensor:
        """Normalise ``[B, 3, H, W]`` images in 0..1 with the VFM's own mean/std (dtype kept)."""
        if images01.ndim != 4 or images01.shape[1] != 3:
            raise ValueError(f'expected images of shape [B, 3, H, W], got {tuple(images01.shape)}')
        mean = self.mean.to(device=images01.device, dtype=images01.dtype).view(1, 3, 1, 1)
        std = self.std.to(device=images01.device, dtype=images01.dtype).view(1, 3, 1, 1)
        return (images01 - mean) / std

    def grid_size(self, height: int, width: int):
        """Patch grid ``(h, w)`` of an ``H x W`` input: ``H / p`` rounded to the nearest whole
        number of patches, at least 1 (see :meth:`patch_features`)."""
        p = self.patch_size
        return max(1, int(round(height / p))), max(1, int(round(width / p)))

    def patch_features(self, images: torch.Tensor) -> torch.Tensor:
        """Last-layer patch tokens (after the final norm, prefix tokens dropped) on their grid.

        Args:
            images: ``[B, 3, H, W]`` normalised images (see :meth:`normalize`), any ``H, W >= 1``.
                A side that is not a multiple of ``patch_size`` (a DINOv2 patch-14 model on
                16-pixel CLIP crops, a tiny image) is bilinearly resized to the nearest multiple
                (at least one patch), so the token grid always spans the whole input and lines
                up with the CLIP grid of the same crop; multiples are not resampled.

        Returns:
            ``[B, h, w, embed_dim]`` tokens with ``(h, w) = grid_size(H, W)`` (not
            L2-normalised), in the dtype of the model's parameters (or the autocast dtype), on
            the model's device.
        """
        if images.ndim != 4 or images.shape[1] != 3 or min(images.shape[-2:]) < 1:
            raise ValueError(f'expected images of shape [B, 3, H, W], got {tuple(images.shape)}')
        h, w = self.grid_size(images.shape[-2], images.shape[-1])
        images = resize_to_patch_multiple(images, self.patch_size)
        weight = self.model.patch_embed.proj.weight
        tokens = self.model.forward_features(images.to(device=weight.device, dtype=weight.dtype))
        n_prefix = self.num_prefix_tokens
        if tokens.ndim != 3 or tokens.shape[1] != n_prefix + h * w:
            raise RuntimeError(
                f'VFM {self.name!r} returned tokens {tuple(tokens.shape)}; expected '
                f'[B, {n_prefix} + {h}*{w}, D] for input {tuple(images.shape[-2:])}')
        return tokens[:, n_prefix:].reshape(tokens.shape[0], h, w, tokens.shape[-1])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Alias of :meth:`patch_features`."""
        return self.patch_features(images)

    def checkpoint_sha256(self) -> Optional[str]:
        """sha256 hex digest of the local checkpoint file (``None`` if none); cached."""
        if self.checkpoint is None:
            return None
        if self._sha256 is None:
            digest = hashlib.sha256()
            with open(self.checkpoint, 'rb') as f:
                for block in iter(lambda: f.read(1 << 20), b''):
                    digest.update(block)
            self._sha256 = digest.hexdigest()
        return self._sha256

    def describe(self) -> Dict[str, Any]:
        """Provenance for artifact metadata: name, weights source, dims, normalisation stats."""
        return dict(name=self.name,
                    pretrained=self.checkpoint if self.checkpoint else bool(self.pretrained),
                    checkpoint_sha256=self.checkpoint_sha256(),
                    patch_size=self.patch_size, embed_dim=self.embed_dim,
                    num_prefix_tokens=self.num_prefix_tokens,
                    mean=[float(m) for m in self.mean], std=[float(s) for s in self.std])

    def extra_repr(self) -> str:
        return (f'name={self.name!r}, checkpoint={self.checkpoint!r}, '
                f'patch_size={self.patch_size}, embed_dim={self.embed_dim}')


def build_vfm_encoder(cfg: Union[Dict[str, Any], VFMEncoder]) -> VFMEncoder:
    """Build a :class:`VFMEncoder` from a config dict (or return an encoder unchanged).

    Args:
        cfg: ``dict(name=<timm name>, pretrained=True | False | None | path,
            model_kwargs=dict(...), pretrained_cfg_overlay=dict(mean=..., std=...))``;
            ``pretrained`` defaults to ``True``.
    """
    if isinstance(cfg, VFMEncoder):
        return cfg
    if not isinstance(cfg, dict):
        raise ValueError(f'vfm config must be a dict like dict(name=..., pretrained=...), '
                         f'got {type(cfg).__name__}')
    unknown = sorted(set(cfg) - set(_CFG_KEYS))
    if unknown:
        raise ValueError(f'unknown vfm config keys {unknown}; allowed: {list(_CFG_KEYS)} '
                         '(timm.create_model arguments go into vfm.model_kwargs)')
    if 'name' not in cfg:
        raise ValueError("vfm config needs a timm model 'name', e.g. "
                         "dict(name='vit_base_patch16_dinov3.lvd1689m', pretrained=True)")
    return VFMEncoder(cfg['name'], cfg.get('pretrained', True), cfg.get('model_kwargs'),
                      cfg.get('pretrained_cfg_overlay'))


# ---------------------------------------------------------------------------- VFM window
DEFAULT_VFM_MAX_TOKENS = 4096
"""Largest VFM patch grid (tokens) encoded in one forward under ``vfm_window='whole'``: 64 x 64
patches, i.e. 1024 x 1024 pixels for a patch-16 DINOv3.  A larger image is encoded in windows of
at most this many tokens instead (:func:`vfm_windows_of`), so memory stays bounded whatever the
image size (attention memory grows with the square of the tokens on back-ends without a fused
kernel)."""


def check_vfm_window(value) -> Union[str, Dict[str, Any]]:
    """Normalise a ``vfm_window`` setting.

    Args:
        value: ``'crop'`` (the VFM encodes each CLIP crop: the published behaviour),
            ``'whole'`` (one forward per image, capped, see :data:`DEFAULT_VFM_MAX_TOKENS`) or
            ``dict(crop_size=int | (h, w), stride=int | (h, w))`` (VFM windows of their own, in
            pixels, stride <= crop_size).

    Returns:
        ``'crop'``, ``'whole'`` or ``dict(crop_size=(h, w), stride=(h, w))``.
    """
    from .sliding import _pair
    if isinstance(value, str) and value in ('crop', 'whole'):
        return value
    hint = ("vfm_window must be 'crop', 'whole' or dict(crop_size=448, stride=336) (pixels), "
            f'got {value!r}')
    if not isinstance(value, dict) or set(value) != {'crop_size', 'stride'}:
        raise ValueError(hint)
    try:
        crop, stride = _pair('crop_size', value['crop_size']), _pair('stride', value['stride'])
    except ValueError as err:
        raise ValueError(f'{hint} ({err})') from None
    if stride[0] > crop[0] or stride[1] > crop[1]:
        raise ValueError(f'{hint}: stride {stride} larger than crop_size {crop} would leave gaps')
    return dict(crop_size=crop, stride=stride)


def vfm_windows_of(height: int, width: int, window, patch_size: int,
                   max_tokens: int = DEFAULT_VFM_MAX_TOKENS):
    """VFM windows ``[(y1, y2, x1, x2), ...]`` (half-open pixels) covering an image.

    ``'whole'``: the image itself when its patch grid has at most ``max_tokens`` tokens, else
    square windows of ``floor(sqrt(max_tokens))`` patches with a stride of 3/4 of that (the memory
    cap).  A dict window: :func:`~gpua_mmseg.models.sliding.crop_boxes` of its crop / stride.
    """
    from .sliding import crop_boxes
    if window == 'whole':
        gh, gw = max(1, round(height / patch_size)), max(1, round(width / patch_size))
        if gh * gw <= max_tokens:
            return [(0, height, 0, width)]
        side = max(1, int(math.isqrt(int(max_tokens)))) * patch_size
        return crop_boxes(height, width, side, max(1, side * 3 // 4))
    return crop_boxes(height, width, window['crop_size'], window['stride'])


class VFMWindowTokens:
    """VFM patch tokens of CLIP crops under a ``vfm_window`` setting.

    The one code path of inference (:class:`~gpua_mmseg.models.GPUASegmentor`) and of the fit's
    feature extraction (:func:`gpua_mmseg.fitting.extract.extract_image_features`).

    * ``'crop'``: :meth:`tokens` encodes the crops themselves,
      ``vfm.patch_features(vfm.normalize(crops))`` -> ``[n, hv, wv, dv]`` on the crop's VFM grid
      (bit for bit the behaviour before ``vfm_window`` existed).
    * ``'whole'`` / dict: at construction, every image is encoded once per VFM window
      (:func:`vfm_windows_of`; windows of equal shape, of all images, batched ``batch_size`` at
      a time).
      :meth:`tokens` then samples that field at the centre of every CLIP patch of each crop
      (bilinear, ``align_corners=False``, in image pixel coordinates: a window's token ``(a, b)``
      sits at the centre of its ``1/hv x 1/wv`` cell of the window), averaging the windows that
      contain the centre, and returns ``[n, H/p, W/p, dv]`` on the crop's CLIP grid (``p`` =
      ``clip_patch``).  Centres outside a window's token centres take the nearest border token
      (``padding_mode='border'``); centres in a crop's zero padding (images smaller than the crop)
      take the image border's tokens, not tokens of black pixels.

    Args:
        vfm_encoder: a :class:`VFMEncoder` (or any module with ``normalize`` / ``patch_features``
            / ``patch_size``).
        images01: list of ``[3, H_i, W_i]`` images in 0..1, indexed as the crops' ``image``.
        window: a :func:`check_vfm_window` value.
        clip_patch: the CLIP patch size in pixels (crops are multiples of it).
        max_tokens: the ``'whole'`` memory cap.
        batch_size: VFM windows per forward.
        side: a :class:`~gpua_mmseg.models.streams.SideStream`: the ``'whole'`` / dict
            encoding is enqueued on it here and the current stream waits for it at the first
            :meth:`tokens` call, so CLIP work enqueued in between runs beside it (no effect
            off CUDA, none for ``'crop'``).

    Attributes:
        forwards: number of VFM forward calls made so far (``patch_features`` calls).
    """

    def __init__(self, vfm_encoder, images01, window, clip_patch: int,
                 max_tokens: int = DEFAULT_VFM_MAX_TOKENS, batch_size: int = 32, side=None):
        from .sliding import iter_crop_batches
        from .streams import SideStream
        self.vfm = vfm_encoder
        self.window = check_vfm_window(window)
        self.clip_patch = int(clip_patch)
        self.forwards = 0
        self.fields = None
        # joined at the first tokens() call; inert when there is nothing to overlap
        self._side = side if side is not None else SideStream('cpu', False)
        self._joined = False
        if self.window == 'crop':
            return
        images01 = list(images01)
        # per image: [(box, tokens [dv, hv, wv]), ...]
        self.fields = [[] for _ in images01]
        p = int(vfm_encoder.patch_size)
        owners, crops = [], []   # windows of all images: equal shapes share a forward
        for i, img in enumerate(images01):
            for box in vfm_windows_of(img.shape[-2], img.shape[-1], self.window, p, max_tokens):
                y1, y2, x1, x2 = box
                owners.append((i, box))
                crops.append(img[:, y1:y2, x1:x2])
        # iter_crop_batches groups equal shapes (size_divisor 1: no padding)
        with self._side.launch():
            for batch, chunk in iter_crop_batches(crops, 0, None, batch_size, 1):
                feats = vfm_encoder.patch_features(vfm_encoder.normalize(batch))
                self.forwards += 1
                for j, c in enumerate(chunk):
                    i, box = owners[c.image]
                    self.fields[i].append((box, feats[j].permute(2, 0, 1)))

    def tokens(self, crops01, crops) -> torch.Tensor:
        """VFM tokens of one crop batch.

        Args:
            crops01: ``[n, 3, H, W]`` crops in 0..1 as :func:`iter_crop_batches` yields them.
            crops: its ``Crop`` list (image index, box, padding), same order.

        Returns:
            ``[n, hv, wv, dv]`` (``'crop'``: the crop's VFM grid) or ``[n, H/p, W/p, dv]``
            (otherwise: the CLIP grid), in the VFM's output dtype.
        """
        if self.fields is None:
            self.forwards += 1
            return self.vfm.patch_features(self.vfm.normalize(crops01))
        if not self._joined:
            self._side.join(*(t for f in self.fields for _, t in f))
            self._joined = True
        p = self.clip_patch
        ph, pw = crops01.shape[-2:]
        h, w = ph // p, pw // p
        out = []
        for c in crops:
            y1, _, x1, _ = c.box
            left, _, top, _ = c.pad
            dev = self.fields[c.image][0][1].device
            ys = y1 - top + (torch.arange(h, device=dev, dtype=torch.float32) + 0.5) * p
            xs = x1 - left + (torch.arange(w, device=dev, dtype=torch.float32) + 0.5) * p
            out.append(self._sample(self.fields[c.image], ys, xs))
        return torch.stack(out, 0)

    @staticmethod
    def _sample(field, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        """Average over the windows of ``field`` containing each point of the grid ``ys x xs``
        (pixel coordinates) of their bilinear samples -> ``[len(ys), len(xs), dv]``."""
        img_h = max(b[1] for b, _ in field)
        img_w = max(b[3] for b, _ in field)
        # containment on coordinates clamped into the image (padding centres lie outside it)
        yc = ys.clamp(0.0, img_h - 0.5)
        xc = xs.clamp(0.0, img_w - 0.5)
        total, count = None, None
        for (y1, y2, x1, x2), tok in field:
            inside = (((yc >= y1) & (yc < y2))[:, None] & ((xc >= x1) & (xc < x2))[None, :])
            if len(field) > 1 and not bool(inside.any()):
                continue
            gy = 2.0 * (ys - y1) / (y2 - y1) - 1.0
            gx = 2.0 * (xs - x1) / (x2 - x1) - 1.0
            # grid_sample's last axis is (x, y)
            grid = torch.stack(torch.broadcast_tensors(gx[None, :], gy[:, None]), -1)[None]
            s = F.grid_sample(tok[None].float(), grid, mode='bilinear', padding_mode='border',
                              align_corners=False)[0]                      # [dv, h, w]
            m = inside.to(s.dtype)
            total = s * m if total is None else total + s * m
            count = m if count is None else count + m
        return (total / count.clamp_min(1.0)).permute(1, 2, 0).to(field[0][1].dtype)
