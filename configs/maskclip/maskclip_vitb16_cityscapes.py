# MaskCLIP (value path of the last block only), CLIP ViT-B/16, cityscapes.
_base_ = ['../_base_/models/maskclip.py', '../_base_/datasets/cityscapes.py',
          '../_base_/default_runtime.py']
model = dict(class_names='cityscapes')
