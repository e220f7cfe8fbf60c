"""The toy world's two encoder architectures (single home; the configs repeat them literally and
``tests/toyworld`` checks that they agree).

* CLIP: an unmodified open_clip ``CLIP`` with average pooling of the patch tokens (so every
  patch embedding is trained towards the caption), patch 8 on 64 x 64 images (8 x 8 grid),
  open_clip's default BPE tokenizer (hence the 49 408-row token embedding: a narrow text tower,
  stored in fp16, keeps the file small).
* VFM: timm's DINOv3 ViT (``vit_small_patch16_dinov3`` architecture) shrunk to width 128,
  depth 3, patch 8; same 8 x 8 grid, so GPUA pairs patches one to one.  (Width 64 could not
  learn colour-invariant texture statistics: the patch embedding compresses 192 pixel values
  into 64 numbers before any non-linearity.)
"""
import copy
import os.path as osp

__all__ = ['TOY_CLIP_NAME', 'TOY_CLIP_MODEL_CFG', 'TOY_VFM_NAME', 'TOY_VFM_KWARGS',
           'TOY_VFM_CFG_OVERLAY', 'WEIGHTS_DIR',
           'CLIP_WEIGHTS', 'VFM_WEIGHTS', 'MANIFEST', 'CLASS_NAMES_FILE', 'clip_model_cfg',
           'vfm_model_kwargs', 'vfm_cfg_overlay']

TOY_CLIP_NAME = 'toyworld-clip-vit-p8'
TOY_CLIP_MODEL_CFG = dict(
    embed_dim=64,
    quick_gelu=False,
    vision_cfg=dict(image_size=64, patch_size=8, width=64, layers=3, head_width=16,
                    pool_type='avg'),
    text_cfg=dict(context_length=24, vocab_size=49408, width=48, heads=4, layers=1),
)
TOY_VFM_NAME = 'vit_small_patch16_dinov3'
TOY_VFM_KWARGS = dict(embed_dim=128, depth=3, num_heads=4, patch_size=8, img_size=64)
#: the toy VFM's input statistics (timm ``pretrained_cfg`` overlay, what it was trained with):
#: ``(x - 0.5) / 0.125``, deliberately far from CLIP's (0.48, 0.27), so that a VFM fed
#: CLIP-normalised input is visibly wrong in the toy world.  DINOv3's ImageNet statistics are
#: within 20 % of CLIP's, so with them that mix-up would cost the toy VFM nothing and no test
#: could see it.  (Pixels in 0..1 as they are, mean 0 / std 1, stalled its training.)
TOY_VFM_CFG_OVERLAY = dict(mean=(0.5, 0.5, 0.5), std=(0.125, 0.125, 0.125))

_PKG = osp.dirname(osp.dirname(osp.abspath(__file__)))
WEIGHTS_DIR = osp.join(_PKG, 'data', 'toyworld')
CLIP_WEIGHTS = osp.join(WEIGHTS_DIR, 'toy_clip.safetensors')
VFM_WEIGHTS = osp.join(WEIGHTS_DIR, 'toy_vfm.safetensors')
MANIFEST = osp.join(WEIGHTS_DIR, 'manifest.json')
CLASS_NAMES_FILE = osp.join(osp.dirname(osp.abspath(__file__)), 'toyworld.txt')


def clip_model_cfg() -> dict:
    """A fresh copy of :data:`TOY_CLIP_MODEL_CFG` (open_clip ``CLIP(**cfg)`` keyword arguments)."""
    return copy.deepcopy(TOY_CLIP_MODEL_CFG)


def vfm_cfg_overlay() -> dict:
    """A fresh copy of :data:`TOY_VFM_CFG_OVERLAY` (``pretrained_cfg_overlay`` entries)."""
    return copy.deepcopy(TOY_VFM_CFG_OVERLAY)


def vfm_model_kwargs() -> dict:
    """A fresh copy of :data:`TOY_VFM_KWARGS` (``timm.create_model`` keyword arguments)."""
    return copy.deepcopy(TOY_VFM_KWARGS)
