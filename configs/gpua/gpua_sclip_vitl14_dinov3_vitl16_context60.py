# GPUA (dinov3_vitl16, lambda 0.9) on sclip_vitl14_context60; fit the map with
#   python tools/fit_alignment.py configs/gpua/gpua_sclip_vitl14_dinov3_vitl16_context60.py
_base_ = ['../sclip/sclip_vitl14_context60.py', '../_base_/models/gpua_dinov3_vitl16.py']
model = dict(vfm=_base_.gpua_vfm, decode_head=dict(
    _base_.gpua_head, alignment_path='work_dirs/alignment/dinov3_vitl16_sclip_vitl14_context60.safetensors',
    config_path='configs/gpua/gpua_sclip_vitl14_dinov3_vitl16_context60.py'))
