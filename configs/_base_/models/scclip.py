# SC-CLIP (self-calibrated CLIP): the ViT-B/16 defaults of the published code, used by every
# configs/scclip (and so configs/gpua/gpua_scclip_*) config.
_base_ = ['./clip_baseline.py']
model = dict(
    clip_mode='scclip',
    clip_mode_cfg=dict(pre_adjust_idx=8, post_adjust_idx=3, multi_start_idx=3,
                       multi_end_idx=10, res_cls=0.3))
