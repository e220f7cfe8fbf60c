# GPUA on top of SC-CLIP (CLIP ViT-B/16) with DINOv3 ViT-B/16 patch tokens, cityscapes.
# The scclip config supplies CLIP, thresholds and the dataset; the orthogonal map is fitted with
#   python tools/fit_alignment.py configs/gpua/gpua_scclip_dinov3_vitb16_cityscapes.py
_base_ = ['../scclip/scclip_vitb16_cityscapes.py', '../_base_/models/gpua_dinov3_vitb16.py']
model = dict(vfm=_base_.gpua_vfm, decode_head=dict(
    _base_.gpua_head,
    alignment_path='work_dirs/alignment/dinov3_vitb16_scclip_vitb16_cityscapes.safetensors',
    config_path='configs/gpua/gpua_scclip_dinov3_vitb16_cityscapes.py'))
