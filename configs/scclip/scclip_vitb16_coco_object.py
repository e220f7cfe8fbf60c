# SC-CLIP (self-calibrated CLIP; ViT-B/16 defaults of the published code), CLIP ViT-B/16, coco_object.
_base_ = ['../_base_/models/scclip.py', '../_base_/datasets/coco_object.py',
          '../_base_/default_runtime.py']
model = dict(class_names='coco_object', logit_scale=55.0, prob_thd=0.35, bg_idx=0)
