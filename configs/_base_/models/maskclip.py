# MaskCLIP: value path of the last block only (no attention, residual or FFN).
_base_ = ['./clip_baseline.py']
model = dict(clip_mode='maskclip')
