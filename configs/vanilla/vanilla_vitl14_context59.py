# Vanilla CLIP, CLIP ViT-L/14, context59: the ViT-B/16 config with a larger CLIP.
_base_ = ['./vanilla_vitb16_context59.py', '../_base_/models/vitl14.py']
model = dict(clip=_base_.clip_vitl14)
