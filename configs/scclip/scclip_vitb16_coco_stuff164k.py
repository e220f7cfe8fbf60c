# SC-CLIP (self-calibrated CLIP; ViT-B/16 defaults of the published code), CLIP ViT-B/16, coco_stuff164k.
# Logit scale and thresholds as in the benchmarks table (SC-CLIP column; unset: 40, 0, none).
_base_ = ['../_base_/models/scclip.py', '../_base_/datasets/coco_stuff164k.py',
          '../_base_/default_runtime.py']
model = dict(class_names='coco_stuff164k')

# SC-CLIP evaluates COCO-Stuff at short side 336 (SCLIP: 448, the dataset default)
test_pipeline = _base_.test_pipeline[:1] + [
    dict(type='Resize', scale=(2048, 336), keep_ratio=True)] + _base_.test_pipeline[2:]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
