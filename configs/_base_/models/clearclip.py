# ClearCLIP: q-q attention in the last block, no residual, no FFN.  ClearCLIP published its
# VOC21 protocol (short side 448, prob_thd 0.5); the other background datasets use 0.1 here.
_base_ = ['./clip_baseline.py']
model = dict(clip_mode='clearclip')
