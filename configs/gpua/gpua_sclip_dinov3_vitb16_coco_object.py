# GPUA (dinov3_vitb16, lambda 0.9) on sclip_vitb16_coco_object; fit the map with
#   python tools/fit_alignment.py configs/gpua/gpua_sclip_dinov3_vitb16_coco_object.py
_base_ = ['../sclip/sclip_vitb16_coco_object.py', '../_base_/models/gpua_dinov3_vitb16.py']
model = dict(vfm=_base_.gpua_vfm, decode_head=dict(
    _base_.gpua_head, alignment_path='work_dirs/alignment/dinov3_vitb16_sclip_vitb16_coco_object.safetensors',
    config_path='configs/gpua/gpua_sclip_dinov3_vitb16_coco_object.py'))
