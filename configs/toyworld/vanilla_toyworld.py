# TOY WORLD: unmodified CLIP last block on the toy CLIP (the weak reference point).
_base_ = ['./_base_/toyworld_clip.py']
model = dict(clip_mode='vanilla')
