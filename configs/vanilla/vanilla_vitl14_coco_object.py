# Vanilla CLIP, CLIP ViT-L/14, coco_object: the ViT-B/16 config with a larger CLIP.
_base_ = ['./vanilla_vitb16_coco_object.py', '../_base_/models/vitl14.py']
model = dict(clip=_base_.clip_vitl14)
