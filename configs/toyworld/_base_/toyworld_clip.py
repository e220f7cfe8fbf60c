# Toy-world CLIP baseline: the trained tiny open_clip CLIP (gpua_mmseg/data/toyworld/), its own
# vocabulary and one prompt template (the captions it was trained on read "a photo of a ...").
# The architecture repeats gpua_mmseg.toyworld.models.TOY_CLIP_MODEL_CFG (a test checks it).
_base_ = [
    '../../_base_/models/clip_baseline.py',
    './toyworld_dataset.py',
    '../../_base_/default_runtime.py',
]
toyworld_weights = '{{fileDirname}}/../../../gpua_mmseg/data/toyworld'
model = dict(
    clip=dict(
        _delete_=True,
        name='toyworld-clip-vit-p8',
        quick_gelu=False,
        pretrained=toyworld_weights + '/toy_clip.safetensors',
        model_cfg=dict(
            embed_dim=64,
            quick_gelu=False,
            vision_cfg=dict(image_size=64, patch_size=8, width=64, layers=3, head_width=16,
                            pool_type='avg'),
            text_cfg=dict(context_length=24, vocab_size=49408, width=48, heads=4, layers=1))),
    class_names='{{fileDirname}}/../../../gpua_mmseg/toyworld/toyworld.txt',
    templates=['a photo of a {}.'],
    slide_crop=64, slide_stride=64, crop_batch_size=32,
    logit_scale=40.0, prob_thd=0.0, area_thd=None, bg_idx=None,
)
