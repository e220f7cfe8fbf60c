# SCLIP: correlative self-attention in the last CLIP block (residual and FFN kept).
_base_ = ['./clip_baseline.py']
model = dict(clip_mode='sclip')
