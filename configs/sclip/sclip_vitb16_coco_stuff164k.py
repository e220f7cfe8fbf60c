# SCLIP (correlative self-attention in the last block; residual and FFN kept), CLIP ViT-B/16, coco_stuff164k.
_base_ = ['../_base_/models/sclip.py', '../_base_/datasets/coco_stuff164k.py',
          '../_base_/default_runtime.py']
model = dict(class_names='coco_stuff164k')
