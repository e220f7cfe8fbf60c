# ProxyCLIP (proxy attention from DINOv3 ViT-B/16 patch tokens; window 336/112), CLIP ViT-B/16, coco_stuff164k.
_base_ = ['../_base_/models/proxyclip.py', '../_base_/datasets/coco_stuff164k_s336.py',
          '../_base_/default_runtime.py']
model = dict(class_names='coco_stuff164k')
