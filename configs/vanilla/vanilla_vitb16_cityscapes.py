# Unmodified CLIP last block (no MaskCLIP trick): the weak reference point, CLIP ViT-B/16, cityscapes.
_base_ = ['../_base_/models/vanilla.py', '../_base_/datasets/cityscapes.py',
          '../_base_/default_runtime.py']
model = dict(class_names='cityscapes')
