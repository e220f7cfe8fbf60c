# SC-CLIP (ViT-L/14 indices), CLIP ViT-L/14, context59: the ViT-B/16 config with a larger CLIP.
_base_ = ['./scclip_vitb16_context59.py', '../_base_/models/vitl14.py']
model = dict(clip=_base_.clip_vitl14, clip_mode_cfg=_base_.scclip_vitl14_cfg)
