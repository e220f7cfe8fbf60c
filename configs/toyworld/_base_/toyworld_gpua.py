# TOY WORLD base: toy CLIP (see toyworld_clip.py) + GPUA head on the toy VFM (timm DINOv3
# architecture, width 128, depth 3, patch 8; repeats gpua_mmseg.toyworld.models.TOY_VFM_KWARGS
# and, for the input statistics it was trained with, TOY_VFM_CFG_OVERLAY).
# Method configs set clip_mode and the head's alignment_path / config_path.
_base_ = ['./toyworld_clip.py']
model = dict(
    vfm=dict(
        name='vit_small_patch16_dinov3',
        pretrained='{{fileDirname}}/../../../gpua_mmseg/data/toyworld/toy_vfm.safetensors',
        model_kwargs=dict(embed_dim=128, depth=3, num_heads=4, patch_size=8, img_size=64),
        pretrained_cfg_overlay=dict(mean=(0.5, 0.5, 0.5), std=(0.125, 0.125, 0.125))),
    decode_head=dict(type='GPUAHead', alignment_path='', fusion_weight=0.9),
)
