"""SOTAlign's labelled images come from a split that is not the evaluated one (issue 9, item 3):
split derivation from MMSeg layouts, the explicit opt-in for test labels, and an end-to-end fit
on a toy VOC dataset whose train and val lists are disjoint.  Tiny random models; no network."""
import os.path as osp
import subprocess
import sys

import pytest

import gpua_mmseg.models  # noqa: F401  (mmcv-lite placeholder before mmseg)
from gpua_mmseg.alignment import AlignmentMap
from gpua_mmseg.fitting import FitOptions, run_fit
from gpua_mmseg.fitting.labeled_split import (TEST_LABELS_WARNING, check_labeled_split,
                                              train_dataset_cfg)
from gpua_mmseg.models.clip import tiny_clip_model_cfg

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SCLIP_CFG = osp.join(ROOT, 'configs/gpua/gpua_sclip_dinov3_vitb16_voc21.py')


@pytest.mark.parametrize('test_ds,key,want', [
    (dict(ann_file='ImageSets/Segmentation/val.txt',
          data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass')),
     'ann_file', 'ImageSets/Segmentation/train.txt'),
    (dict(data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation')),
     'img_path', 'images/training'),
    (dict(data_prefix=dict(img_path='leftImg8bit/val', seg_map_path='gtFine/val')),
     'seg_map_path', 'gtFine/train'),
    (dict(data_prefix=dict(img_path='images/val2017', seg_map_path='annotations/val2017')),
     'img_path', 'images/train2017')])
def test_train_split_derived_from_mmseg_layout(test_ds, key, want):
    out = train_dataset_cfg({}, dict(test_ds, type='X', pipeline=[dict(type='LoadAnnotations')]))
    got = out['ann_file'] if key == 'ann_file' else out['data_prefix'][key]
    assert got == want
    assert out['pipeline'] == [dict(type='LoadAnnotations')]


def test_train_dataloader_wins_and_keeps_the_test_pipeline():
    cfg = dict(train_dataloader=dict(dataset=dict(type='T', ann_file='a/train_aug.txt',
                                                  pipeline=[dict(type='RandomFlip')])))
    test = dict(type='T', ann_file='a/val.txt', pipeline=[dict(type='LoadAnnotations')])
    out = train_dataset_cfg(cfg, test)
    assert out['ann_file'] == 'a/train_aug.txt'
    assert out['pipeline'] == [dict(type='LoadAnnotations')]      # no training augmentation


def test_no_train_split_is_a_clear_error():
    with pytest.raises(ValueError, match='cannot locate a labelled train split'):
        train_dataset_cfg({}, dict(type='X', data_prefix=dict(img_path='my_images')))


def test_test_split_needs_explicit_flag():
    with pytest.raises(ValueError, match='--allow-test-labels'):
        check_labeled_split('test', False)
    check_labeled_split('test', True)
    with pytest.raises(ValueError, match='--labeled-split must be one of'):
        check_labeled_split('val', False)
    with pytest.raises(ValueError, match='--allow-test-labels'):
        FitOptions(method='sotalign', labeled=2, labeled_split='test').validate()


@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    out = tmp_path_factory.mktemp('split') / 'toy'
    r = subprocess.run([sys.executable, osp.join(ROOT, 'tools/make_toy_dataset.py'), str(out),
                        '--n', '4', '--size', '64', '96'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lists = osp.join(out, 'ImageSets', 'Segmentation')
    ids = open(osp.join(lists, 'val.txt')).read().split()
    assert len(ids) == 4
    # disjoint splits: 2 evaluated (val) images, 2 labelled (train) images
    open(osp.join(lists, 'val.txt'), 'w').write('\n'.join(ids[:2]) + '\n')
    open(osp.join(lists, 'train.txt'), 'w').write('\n'.join(ids[2:]) + '\n')
    return out


def _cfg(root):
    from mmengine.config import Config
    cfg = Config.fromfile(SCLIP_CFG)
    clip = dict(name='tiny', pretrained=None, model_cfg=tiny_clip_model_cfg(
        width=32, layers=3, heads=2, embed_dim=16, text_width=32, text_layers=1, text_heads=2,
        context_length=16))
    cfg.merge_from_dict({
        'model.clip': clip, 'model.vfm.pretrained': False,
        'model.vfm.model_kwargs': dict(embed_dim=24, depth=1, num_heads=2, img_size=64),
        'test_dataloader.dataset.data_root': str(root),
        'test_dataloader.dataset.pipeline.1.scale': (2048, 64), 'model.templates': ['{}'],
        'model.slide_crop': 64, 'model.slide_stride': 32})
    return cfg


def _opts(tmp_path, name, **kw):
    return FitOptions(method='sotalign', labeled=2, out=str(tmp_path / f'{name}.safetensors'),
                      cache_dir=str(tmp_path / f'cache_{name}'), progress=False, plot=False,
                      fit_cfg=dict(otp_iters=2, cv_folds=2, gpua=dict(outer_iters=2,
                                                                       adaptive_iters=2)),
                      **kw)


def test_labeled_images_come_from_the_train_split(toy, tmp_path):
    out = run_fit(_cfg(toy), _opts(tmp_path, 'train'))
    amap = AlignmentMap.load(out)
    split = amap.meta['labeled_split']
    assert split['split'] == 'train' and split['ann_file'].endswith('train.txt')
    assert 'warnings' not in amap.meta
    # unpaired patches: the 2 evaluated images only; pairs: the 2 train images
    assert amap.meta['n_samples'] == 2 * 2 * 16 and amap.meta['n_images'] == 2
    assert 0 < amap.meta['n_pairs'] <= 2 * 2 * 16
    assert amap.meta['used_clip']                       # the fit tool passes the CLIP rows


def test_test_split_labels_need_the_flag_and_leave_a_warning(toy, tmp_path):
    with pytest.raises(ValueError, match='--allow-test-labels'):
        run_fit(_cfg(toy), _opts(tmp_path, 'refused', labeled_split='test'))
    assert not osp.exists(tmp_path / 'refused.safetensors')
    with pytest.warns(UserWarning, match='evaluated'):
        out = run_fit(_cfg(toy), _opts(tmp_path, 'test', labeled_split='test',
                                       allow_test_labels=True))
    amap = AlignmentMap.load(out)
    assert amap.meta['labeled_split'] == {'split': 'test'}
    assert amap.meta['warnings'] == [TEST_LABELS_WARNING]


def test_missing_train_split_is_a_clear_error(toy, tmp_path):
    import shutil
    root = tmp_path / 'no_train'
    shutil.copytree(toy, root)
    (root / 'ImageSets' / 'Segmentation' / 'train.txt').unlink()
    with pytest.raises((FileNotFoundError, ValueError), match='train split'):
        run_fit(_cfg(root), _opts(tmp_path, 'missing'))
    assert not osp.exists(tmp_path / 'missing.safetensors')
