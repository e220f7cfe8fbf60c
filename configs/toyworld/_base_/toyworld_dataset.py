# Toy-world dataset (gpua_mmseg.toyworld): 64x64 PNG scenes in VOC layout, 8 classes, no void.
# Write one with
#   python tools/toyworld_make_dataset.py data/toyworld --seed 1 --splits fit:200 val:100
# and point a config at another copy with
#   --cfg-options test_dataloader.dataset.data_root=/path/to/it
# The images stay at their own size (no resize): 8 x 8 patches of 8 px for both toy encoders.
_base_ = ['../../_base_/datasets/_ovss_test.py']
dataset_type = 'BaseSegDataset'
data_root = 'data/toyworld'
toyworld_classes = ('sand', 'grass', 'circle', 'square', 'triangle', 'star', 'cross', 'moon')
toyworld_palette = [[220, 200, 120], [60, 160, 60], [230, 60, 60], [60, 90, 230],
                    [240, 160, 30], [170, 60, 200], [40, 200, 200], [250, 250, 250]]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
test_dataloader = dict(
    num_workers=0,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=dict(classes=toyworld_classes, palette=toyworld_palette),
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
        img_suffix='.png',
        seg_map_suffix='.png',
        ann_file='ImageSets/Segmentation/val.txt',
        reduce_zero_label=False,
        pipeline=test_pipeline))
