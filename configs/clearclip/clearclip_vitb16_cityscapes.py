# ClearCLIP (q-q attention, no residual, no FFN), CLIP ViT-B/16, cityscapes.
_base_ = ['../_base_/models/clearclip.py', '../_base_/datasets/cityscapes.py',
          '../_base_/default_runtime.py']
model = dict(class_names='cityscapes')
