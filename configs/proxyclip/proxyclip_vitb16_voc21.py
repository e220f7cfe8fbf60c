# ProxyCLIP (proxy attention from DINOv3 ViT-B/16 patch tokens; window 336/112), CLIP ViT-B/16, voc21.
_base_ = ['../_base_/models/proxyclip.py', '../_base_/datasets/voc21.py',
          '../_base_/default_runtime.py']
model = dict(class_names='voc21', logit_scale=40.0, prob_thd=0.2, bg_idx=0)
