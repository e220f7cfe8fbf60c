# ProxyCLIP (proxy attention from DINOv3 ViT-B/16 patch tokens; window 336/112), CLIP ViT-B/16, context60.
_base_ = ['../_base_/models/proxyclip.py', '../_base_/datasets/context60.py',
          '../_base_/default_runtime.py']
model = dict(class_names='context60', logit_scale=40.0, prob_thd=0.15, bg_idx=0)
