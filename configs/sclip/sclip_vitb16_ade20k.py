# SCLIP (correlative self-attention in the last block; residual and FFN kept), CLIP ViT-B/16, ade20k.
_base_ = ['../_base_/models/sclip.py', '../_base_/datasets/ade20k.py',
          '../_base_/default_runtime.py']
model = dict(class_names='ade20k')
