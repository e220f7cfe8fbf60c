# NACLIP (k-k attention + Gaussian neighbourhood prior, sigma 5 patches), CLIP ViT-B/16, voc21.
# The published NACLIP code runs PAMR (10 steps) unless disabled; set pamr_steps=10 to match it.
_base_ = [
    '../_base_/models/clip_baseline.py',
    '../_base_/datasets/voc21.py',
    '../_base_/default_runtime.py',
]
model = dict(
    clip_mode='naclip',
    clip_mode_cfg=dict(gaussian_std=5.0),
    class_names='voc21',
    logit_scale=40.0,
    prob_thd=0.1,
    area_thd=None,
    bg_idx=0,  # class 0 is the background class
)
