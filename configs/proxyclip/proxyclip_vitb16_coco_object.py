# ProxyCLIP (proxy attention from DINOv3 ViT-B/16 patch tokens; window 336/112), CLIP ViT-B/16, coco_object.
_base_ = ['../_base_/models/proxyclip.py', '../_base_/datasets/coco_object.py',
          '../_base_/default_runtime.py']
model = dict(class_names='coco_object', logit_scale=40.0, prob_thd=0.25, bg_idx=0)
