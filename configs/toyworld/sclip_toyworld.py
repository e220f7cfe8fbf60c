# TOY WORLD: SCLIP (correlative self-attention in the last block) on the toy CLIP.
_base_ = ['./_base_/toyworld_clip.py']
model = dict(clip_mode='sclip')
