# TOY WORLD: GPUA fused with SC-CLIP (clip_mode_cfg as in scclip_toyworld.py; see
# gpua_sclip_toyworld.py for the fit / test commands).
_base_ = ['./_base_/toyworld_gpua.py']
model = dict(
    clip_mode='scclip',
    clip_mode_cfg=dict(pre_adjust_idx=1, post_adjust_idx=0, multi_start_idx=0, multi_end_idx=2,
                       res_cls=0.3, lof_k=10),
    decode_head=dict(
        alignment_path='work_dirs/alignment/toyworld_vfm_scclip_toyworld.safetensors',
        config_path='configs/toyworld/gpua_scclip_toyworld.py'))
