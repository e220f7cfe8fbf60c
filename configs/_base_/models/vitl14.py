# ViT-L/14 building blocks (not a model by itself): the configs/*/*_vitl14_* files take their
# ViT-B/16 sibling and swap in these.  SC-CLIP's ViT-L/14 layer indices follow method.md §2.
clip_vitl14 = dict(name='ViT-L-14', pretrained='openai')
scclip_vitl14_cfg = dict(pre_adjust_idx=16, post_adjust_idx=6, multi_start_idx=8,
                         multi_end_idx=19, res_cls=0.1)
dinov3_vitl16 = dict(name='vit_large_patch16_dinov3.lvd1689m', pretrained=True)
