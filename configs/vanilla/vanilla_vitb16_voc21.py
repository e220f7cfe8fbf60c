# Unmodified CLIP last block (no MaskCLIP trick): the weak reference point, CLIP ViT-B/16, voc21.
_base_ = [
    '../_base_/models/clip_baseline.py',
    '../_base_/datasets/voc21.py',
    '../_base_/default_runtime.py',
]
model = dict(
    clip_mode='vanilla',
    class_names='voc21',
    logit_scale=40.0,
    prob_thd=0.1,
    area_thd=None,
    bg_idx=0,  # class 0 is the background class
)
