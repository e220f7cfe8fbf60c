# ClearCLIP (q-q attention, no residual, no FFN), CLIP ViT-B/16, voc21.
# Short side 448 and prob_thd 0.5 follow the published ClearCLIP VOC21 config.
_base_ = [
    '../_base_/models/clip_baseline.py',
    '../_base_/datasets/voc21.py',
    '../_base_/default_runtime.py',
]
model = dict(
    clip_mode='clearclip',
    class_names='voc21',
    logit_scale=40.0,
    prob_thd=0.5,
    area_thd=None,
    bg_idx=0,  # class 0 is the background class
)

test_pipeline = _base_.test_pipeline[:1] + [
    dict(type='Resize', scale=(2048, 448), keep_ratio=True)] + _base_.test_pipeline[2:]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
