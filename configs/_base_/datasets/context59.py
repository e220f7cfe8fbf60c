# Pascal Context val, 59 classes: background (label 0) ignored (the Context-60 setup otherwise).
_base_ = ['./context60.py']
dataset_type = 'GPUAPascalContext59Dataset'
test_dataloader = dict(dataset=dict(type=dataset_type, reduce_zero_label=True))
