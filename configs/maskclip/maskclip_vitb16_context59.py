# MaskCLIP (value path of the last block only), CLIP ViT-B/16, context59.
_base_ = ['../_base_/models/maskclip.py', '../_base_/datasets/context59.py',
          '../_base_/default_runtime.py']
model = dict(class_names='context59')
