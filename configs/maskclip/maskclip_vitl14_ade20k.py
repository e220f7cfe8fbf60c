# MaskCLIP, CLIP ViT-L/14, ade20k: the ViT-B/16 config with a larger CLIP.
_base_ = ['./maskclip_vitb16_ade20k.py', '../_base_/models/vitl14.py']
model = dict(clip=_base_.clip_vitl14)
