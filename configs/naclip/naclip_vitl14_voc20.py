# NACLIP, CLIP ViT-L/14, voc20: the ViT-B/16 config with a larger CLIP.
_base_ = ['./naclip_vitb16_voc20.py', '../_base_/models/vitl14.py']
model = dict(clip=_base_.clip_vitl14)
