# SCLIP (correlative self-attention in the last block; residual and FFN kept), CLIP ViT-B/16, voc21.
_base_ = ['../_base_/models/sclip.py', '../_base_/datasets/voc21.py',
          '../_base_/default_runtime.py']
model = dict(class_names='voc21', logit_scale=65.0, prob_thd=0.1, area_thd=0.1, bg_idx=0)
