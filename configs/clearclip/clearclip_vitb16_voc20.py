# ClearCLIP (q-q attention, no residual, no FFN), CLIP ViT-B/16, voc20.
_base_ = ['../_base_/models/clearclip.py', '../_base_/datasets/voc20.py',
          '../_base_/default_runtime.py']
model = dict(class_names='voc20')
