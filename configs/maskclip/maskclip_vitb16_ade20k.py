# MaskCLIP (value path of the last block only), CLIP ViT-B/16, ade20k.
_base_ = ['../_base_/models/maskclip.py', '../_base_/datasets/ade20k.py',
          '../_base_/default_runtime.py']
model = dict(class_names='ade20k')
