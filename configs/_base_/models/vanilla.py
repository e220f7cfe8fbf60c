# Unmodified CLIP last block (no MaskCLIP trick): the weak reference point.
_base_ = ['./clip_baseline.py']
model = dict(clip_mode='vanilla')
