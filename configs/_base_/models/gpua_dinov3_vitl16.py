# The GPUA part of the ViT-L configs: DINOv3 ViT-L/16 tokens (1024-d) mapped into the CLIP
# ViT-L/14 space (768-d) by a fitted map, fused at lambda = 0.9.  The VFM grid (224/16 = 14) is
# resized to the CLIP grid (224/14 = 16) by the head (logged once).  See gpua_dinov3_vitb16.py.
gpua_vfm = dict(name='vit_large_patch16_dinov3.lvd1689m', pretrained=True)
gpua_head = dict(type='GPUAHead', fusion_weight=0.9)
# model.vfm_window / model.vfm_max_tokens: see gpua_dinov3_vitb16.py ('crop' unless set).
