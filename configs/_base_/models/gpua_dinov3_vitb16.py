# The GPUA part of every configs/gpua config: DINOv3 ViT-B/16 patch tokens mapped into CLIP
# space by a fitted orthogonal map, fused with the CLIP logits at lambda = 0.9.  A GPUA config
# lists this file after its CLIP-only base and sets model.vfm / model.decode_head from these
# two entries, adding its own alignment_path (these names are not read by anything else).
gpua_vfm = dict(name='vit_base_patch16_dinov3.lvd1689m', pretrained=True)
gpua_head = dict(type='GPUAHead', fusion_weight=0.9)
