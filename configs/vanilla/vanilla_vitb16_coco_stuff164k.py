# Unmodified CLIP last block (no MaskCLIP trick): the weak reference point, CLIP ViT-B/16, coco_stuff164k.
_base_ = ['../_base_/models/vanilla.py', '../_base_/datasets/coco_stuff164k.py',
          '../_base_/default_runtime.py']
model = dict(class_names='coco_stuff164k')
