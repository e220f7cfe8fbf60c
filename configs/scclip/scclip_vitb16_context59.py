# SC-CLIP (self-calibrated CLIP; ViT-B/16 defaults of the published code), CLIP ViT-B/16, context59.
_base_ = ['../_base_/models/scclip.py', '../_base_/datasets/context59.py',
          '../_base_/default_runtime.py']
model = dict(class_names='context59')
