# SCLIP (correlative self-attention in the last block; residual and FFN kept), CLIP ViT-B/16, cityscapes.
_base_ = ['../_base_/models/sclip.py', '../_base_/datasets/cityscapes.py',
          '../_base_/default_runtime.py']
model = dict(class_names='cityscapes')
