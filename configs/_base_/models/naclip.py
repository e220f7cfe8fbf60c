# NACLIP: k-k attention + Gaussian neighbourhood prior (sigma 5 patches), no residual, no FFN.
# The published NACLIP code runs PAMR (10 steps) unless disabled; set pamr_steps=10 to match it.
_base_ = ['./clip_baseline.py']
model = dict(clip_mode='naclip', clip_mode_cfg=dict(gaussian_std=5.0))
