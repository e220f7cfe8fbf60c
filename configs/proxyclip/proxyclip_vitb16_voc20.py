# ProxyCLIP (proxy attention from DINOv3 ViT-B/16 patch tokens; window 336/112), CLIP ViT-B/16, voc20.
_base_ = ['../_base_/models/proxyclip.py', '../_base_/datasets/voc20.py',
          '../_base_/default_runtime.py']
model = dict(class_names='voc20')
