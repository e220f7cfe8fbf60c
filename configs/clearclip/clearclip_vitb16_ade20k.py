# ClearCLIP (q-q attention, no residual, no FFN), CLIP ViT-B/16, ade20k.
_base_ = ['../_base_/models/clearclip.py', '../_base_/datasets/ade20k.py',
          '../_base_/default_runtime.py']
model = dict(class_names='ade20k')
