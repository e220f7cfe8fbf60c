# ProxyCLIP (proxy attention from DINOv3 ViT-B/16 patch tokens; window 336/112), CLIP ViT-B/16, context59.
_base_ = ['../_base_/models/proxyclip.py', '../_base_/datasets/context59.py',
          '../_base_/default_runtime.py']
model = dict(class_names='context59')
