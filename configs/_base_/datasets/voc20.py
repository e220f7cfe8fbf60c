# Pascal VOC 2012 val without background: 20 classes, label 0 ignored (the VOC21 setup otherwise).
_base_ = ['./voc21.py']
dataset_type = 'GPUAPascalVOC20Dataset'
test_dataloader = dict(dataset=dict(type=dataset_type, reduce_zero_label=True))
