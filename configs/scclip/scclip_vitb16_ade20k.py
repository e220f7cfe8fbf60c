# SC-CLIP (self-calibrated CLIP; ViT-B/16 defaults of the published code), CLIP ViT-B/16, ade20k.
_base_ = ['../_base_/models/scclip.py', '../_base_/datasets/ade20k.py',
          '../_base_/default_runtime.py']
model = dict(class_names='ade20k')
