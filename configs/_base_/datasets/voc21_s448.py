# voc21 with the short side resized to 448 (a method's own protocol; the dataset default otherwise).
_base_ = ['./voc21.py']
test_pipeline = _base_.test_pipeline[:1] + [
    dict(type='Resize', scale=(2048, 448), keep_ratio=True)] + _base_.test_pipeline[2:]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
