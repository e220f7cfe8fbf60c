# SC-CLIP (self-calibrated CLIP; ViT-B/16 defaults of the published code), CLIP ViT-B/16, voc20.
_base_ = ['../_base_/models/scclip.py', '../_base_/datasets/voc20.py',
          '../_base_/default_runtime.py']
model = dict(class_names='voc20')
