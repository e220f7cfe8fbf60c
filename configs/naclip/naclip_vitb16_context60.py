# NACLIP (k-k attention + Gaussian neighbourhood prior, sigma 5 patches), CLIP ViT-B/16, context60.
_base_ = ['../_base_/models/naclip.py', '../_base_/datasets/context60.py',
          '../_base_/default_runtime.py']
model = dict(class_names='context60', logit_scale=40.0, prob_thd=0.1, bg_idx=0)
