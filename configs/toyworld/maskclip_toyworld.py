# TOY WORLD: MaskCLIP (value path of the last block) on the toy CLIP.
_base_ = ['./_base_/toyworld_clip.py']
model = dict(clip_mode='maskclip')
