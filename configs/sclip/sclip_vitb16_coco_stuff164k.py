# SCLIP (correlative self-attention in the last block; residual and FFN kept), CLIP ViT-B/16, coco_stuff164k.
# Logit scale and thresholds as in the benchmarks table (SCLIP column; unset: 40, 0, none).
_base_ = ['../_base_/models/sclip.py', '../_base_/datasets/coco_stuff164k.py',
          '../_base_/default_runtime.py']
model = dict(class_names='coco_stuff164k')
