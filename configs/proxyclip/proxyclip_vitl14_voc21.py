# ProxyCLIP, CLIP ViT-L/14 + DINOv3 ViT-L/16, voc21: the ViT-B/16 config with a larger CLIP.
_base_ = ['./proxyclip_vitb16_voc21.py', '../_base_/models/vitl14.py']
model = dict(clip=_base_.clip_vitl14, vfm=_base_.dinov3_vitl16)
