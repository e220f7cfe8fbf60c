# COCO-Stuff-164k val2017 (5 000 images), 171 classes, *_labelTrainIds.png from
# MMSeg's tools/dataset_converters/coco_stuff164k.py.  Short side 448 (SCLIP); SC-CLIP uses 336.
# Data layout: MMSeg's "Prepare datasets" guide; override the location with
#   --cfg-options test_dataloader.dataset.data_root=/path/to/it
_base_ = ['./_ovss_test.py']
dataset_type = 'COCOStuffDataset'
data_root = 'data/coco_stuff164k'
test_pipeline = _base_.test_pipeline[:1] + [
    dict(type='Resize', scale=(2048, 448), keep_ratio=True)] + _base_.test_pipeline[2:]
test_dataloader = dict(dataset=dict(
    type=dataset_type,
    data_root=data_root,
    data_prefix=dict(img_path='images/val2017', seg_map_path='annotations/val2017'),
    reduce_zero_label=False,
    pipeline=test_pipeline))
