# The GPUA part of every configs/gpua config: DINOv3 ViT-B/16 patch tokens mapped into CLIP
# space by a fitted orthogonal map, fused with the CLIP logits at lambda = 0.9.  A GPUA config
# lists this file after its CLIP-only base and sets model.vfm / model.decode_head from these
# two entries, adding its own alignment_path (these names are not read by anything else).
gpua_vfm = dict(name='vit_base_patch16_dinov3.lvd1689m', pretrained=True)
gpua_head = dict(type='GPUAHead', fusion_weight=0.9)
# Where the VFM looks is the segmentor's model.vfm_window: unset = 'whole' (one VFM forward per
# image, capped at model.vfm_max_tokens = 4096 patches, larger images in windows, resampled onto
# every CLIP crop's patch grid; ProxyCLIP: 'crop'); 'crop' = the VFM encodes each CLIP crop, as
# published (model.vfm_window=crop reproduces the published computation); or
# dict(crop_size=448, stride=336).  The fit extracts its features with the same setting, e.g.
#   --cfg-options model.vfm_window=crop    (for both tools/fit_alignment.py and tools/test.py)
