# TOY WORLD: GPUA (toy VFM -> toy CLIP orthogonal map) fused with SCLIP.  Fit on the fit split
# (its labels are never read), then test on val:
#   python tools/fit_alignment.py configs/toyworld/gpua_sclip_toyworld.py \
#       --cfg-options test_dataloader.dataset.ann_file=ImageSets/Segmentation/fit.txt
#   python tools/test.py configs/toyworld/gpua_sclip_toyworld.py
_base_ = ['./_base_/toyworld_gpua.py']
model = dict(
    clip_mode='sclip',
    decode_head=dict(
        alignment_path='work_dirs/alignment/toyworld_vfm_sclip_toyworld.safetensors',
        config_path='configs/toyworld/gpua_sclip_toyworld.py'))
