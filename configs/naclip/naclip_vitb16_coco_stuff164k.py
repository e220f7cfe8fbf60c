# NACLIP (k-k attention + Gaussian neighbourhood prior, sigma 5 patches), CLIP ViT-B/16, coco_stuff164k.
_base_ = ['../_base_/models/naclip.py', '../_base_/datasets/coco_stuff164k.py',
          '../_base_/default_runtime.py']
model = dict(class_names='coco_stuff164k')
