# SC-CLIP (self-calibrated CLIP; ViT-B/16 defaults of the published code), CLIP ViT-B/16, voc21.
_base_ = ['../_base_/models/scclip.py', '../_base_/datasets/voc21.py',
          '../_base_/default_runtime.py']
model = dict(class_names='voc21', logit_scale=50.0, prob_thd=0.15, area_thd=0.1, bg_idx=0)
