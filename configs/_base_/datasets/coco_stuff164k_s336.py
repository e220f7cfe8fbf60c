# coco_stuff164k with the short side resized to 336 (a method's own protocol; the dataset default otherwise).
_base_ = ['./coco_stuff164k.py']
test_pipeline = _base_.test_pipeline[:1] + [
    dict(type='Resize', scale=(2048, 336), keep_ratio=True)] + _base_.test_pipeline[2:]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
