# Unmodified CLIP last block (no MaskCLIP trick): the weak reference point, CLIP ViT-B/16, voc21.
_base_ = ['../_base_/models/vanilla.py', '../_base_/datasets/voc21.py',
          '../_base_/default_runtime.py']
model = dict(class_names='voc21', logit_scale=40.0, prob_thd=0.1, bg_idx=0)
