# GPUA on top of SCLIP (CLIP ViT-B/16) with DINOv3 ViT-B/16 patch tokens, coco_object.
# The sclip config supplies CLIP, thresholds and the dataset; the orthogonal map is fitted with
#   python tools/fit_alignment.py configs/gpua/gpua_sclip_dinov3_vitb16_coco_object.py
_base_ = ['../sclip/sclip_vitb16_coco_object.py', '../_base_/models/gpua_dinov3_vitb16.py']
model = dict(vfm=_base_.gpua_vfm, decode_head=dict(
    _base_.gpua_head,
    alignment_path='work_dirs/alignment/dinov3_vitb16_sclip_vitb16_coco_object.safetensors',
    config_path='configs/gpua/gpua_sclip_dinov3_vitb16_coco_object.py'))
