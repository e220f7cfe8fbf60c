# MaskCLIP (value path of the last block only), CLIP ViT-B/16, coco_stuff164k.
_base_ = ['../_base_/models/maskclip.py', '../_base_/datasets/coco_stuff164k.py',
          '../_base_/default_runtime.py']
model = dict(class_names='coco_stuff164k')
