# SC-CLIP (self-calibrated CLIP; ViT-B/16 defaults of the published code), CLIP ViT-B/16, context59.
# Logit scale and thresholds as in the benchmarks table (SC-CLIP column).
_base_ = ['../_base_/models/scclip.py', '../_base_/datasets/context59.py',
          '../_base_/default_runtime.py']
model = dict(
    class_names='context59',
    logit_scale=40.0,
    prob_thd=0.0,
    area_thd=None,
)
