# Cityscapes val (500 images), 19 classes, *_gtFine_labelTrainIds.png from MMSeg's
# tools/dataset_converters/cityscapes.py.
# Data layout: MMSeg's "Prepare datasets" guide; override the location with
#   --cfg-options test_dataloader.dataset.data_root=/path/to/it
_base_ = ['./_ovss_test.py']
dataset_type = 'CityscapesDataset'
data_root = 'data/cityscapes'
test_pipeline = _base_.test_pipeline[:1] + [
    dict(type='Resize', scale=(2048, 560), keep_ratio=True)] + _base_.test_pipeline[2:]
test_dataloader = dict(dataset=dict(
    type=dataset_type,
    data_root=data_root,
    data_prefix=dict(img_path='leftImg8bit/val', seg_map_path='gtFine/val'),
    reduce_zero_label=False,
    pipeline=test_pipeline))
