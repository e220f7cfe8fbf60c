# GPUA (dinov3_vitb16, lambda 0.9) on scclip_vitb16_voc21; fit the map with
#   python tools/fit_alignment.py configs/gpua/gpua_scclip_dinov3_vitb16_voc21.py
_base_ = ['../scclip/scclip_vitb16_voc21.py', '../_base_/models/gpua_dinov3_vitb16.py']
model = dict(vfm=_base_.gpua_vfm, decode_head=dict(
    _base_.gpua_head, alignment_path='work_dirs/alignment/dinov3_vitb16_scclip_vitb16_voc21.safetensors',
    config_path='configs/gpua/gpua_scclip_dinov3_vitb16_voc21.py'))
