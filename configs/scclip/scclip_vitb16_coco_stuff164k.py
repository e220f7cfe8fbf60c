# SC-CLIP (self-calibrated CLIP; ViT-B/16 defaults of the published code), CLIP ViT-B/16, coco_stuff164k.
_base_ = ['../_base_/models/scclip.py', '../_base_/datasets/coco_stuff164k_s336.py',
          '../_base_/default_runtime.py']
model = dict(class_names='coco_stuff164k')
