# SC-CLIP (self-calibrated CLIP; ViT-B/16 defaults of the published code), CLIP ViT-B/16, voc20.
# Logit scale and thresholds as in the benchmarks table (SC-CLIP column; unset: 40, 0, none).
_base_ = ['../_base_/models/scclip.py', '../_base_/datasets/voc20.py',
          '../_base_/default_runtime.py']
model = dict(class_names='voc20')
