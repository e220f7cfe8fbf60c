# SC-CLIP (self-calibrated CLIP; ViT-B/16 defaults of the published code), CLIP ViT-B/16, context60.
_base_ = ['../_base_/models/scclip.py', '../_base_/datasets/context60.py',
          '../_base_/default_runtime.py']
model = dict(class_names='context60', logit_scale=40.0, prob_thd=0.15, bg_idx=0)
