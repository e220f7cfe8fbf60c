# ClearCLIP (q-q attention, no residual, no FFN), CLIP ViT-B/16, voc21.
_base_ = ['../_base_/models/clearclip.py', '../_base_/datasets/voc21_s448.py',
          '../_base_/default_runtime.py']
model = dict(class_names='voc21', logit_scale=40.0, prob_thd=0.5, bg_idx=0)
