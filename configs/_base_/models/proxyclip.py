# ProxyCLIP (ECCV 2024): CLIP's last attention replaced by the proxy attention of a VFM's patch
# tokens (here DINOv3 ViT-B/16; DINOv2: vfm.name='vit_base_patch14_reg4_dinov2').  Window 336 /
# stride 112 and beta 1.2 / gamma 3.0 as in the published code; its per-dataset prob_thd and
# short sides are set by the configs/proxyclip files.  GPUA on top reuses this VFM (one forward).
_base_ = ['./clip_baseline.py']
model = dict(
    clip_mode='proxyclip',
    clip_mode_cfg=dict(beta=1.2, gamma=3.0),
    vfm=dict(name='vit_base_patch16_dinov3.lvd1689m', pretrained=True),
    slide_crop=336, slide_stride=112)
