# TOY WORLD: SC-CLIP on the 3-block toy CLIP: block indices scaled from ViT-B/16's 8/3/3..10
# (12 blocks) to the 2 kept intermediate outputs; LOF neighbours 10 for the 64-patch grid.
_base_ = ['./_base_/toyworld_clip.py']
model = dict(
    clip_mode='scclip',
    clip_mode_cfg=dict(pre_adjust_idx=1, post_adjust_idx=0, multi_start_idx=0, multi_end_idx=2,
                       res_cls=0.3, lof_k=10))
