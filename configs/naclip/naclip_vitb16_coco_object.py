# NACLIP (k-k attention + Gaussian neighbourhood prior, sigma 5 patches), CLIP ViT-B/16, coco_object.
_base_ = ['../_base_/models/naclip.py', '../_base_/datasets/coco_object.py',
          '../_base_/default_runtime.py']
model = dict(class_names='coco_object', logit_scale=40.0, prob_thd=0.1, bg_idx=0)
