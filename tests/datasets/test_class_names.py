"""Shipped class-name files: line counts, MMSeg METAINFO order, synonyms, parser errors."""
import pytest

import gpua_mmseg.models  # noqa: F401  (mmcv-lite placeholder before mmseg.datasets)
from gpua_mmseg.datasets import (GPUACOCOObjectDataset, GPUAPascalContext59Dataset,
                                 GPUAPascalContext60Dataset, GPUAPascalVOC20Dataset,
                                 NUM_CLASSES, class_names_path, list_class_name_keys,
                                 load_class_names)
from gpua_mmseg.datasets.class_check import check_class_names, name_matches
from gpua_mmseg.vocabulary import Vocabulary
from mmseg.datasets import (ADE20KDataset, CityscapesDataset, COCOStuffDataset,
                            PascalContextDataset, PascalContextDataset59, PascalVOCDataset)

KEYS = ['voc21', 'voc20', 'context60', 'context59', 'coco_object', 'coco_stuff164k',
        'cityscapes', 'ade20k']
DATASET_OF = {
    'voc21': PascalVOCDataset, 'voc20': GPUAPascalVOC20Dataset,
    'context60': GPUAPascalContext60Dataset, 'context59': GPUAPascalContext59Dataset,
    'coco_object': GPUACOCOObjectDataset, 'coco_stuff164k': COCOStuffDataset,
    'cityscapes': CityscapesDataset, 'ade20k': ADE20KDataset,
}
# Independent authorities (MMSeg's own classes) for our four datasets' class order.
MMSEG_ORDER = {
    'voc21': PascalVOCDataset.METAINFO['classes'],
    'voc20': PascalVOCDataset.METAINFO['classes'][1:],
    'context60': PascalContextDataset.METAINFO['classes'],
    'context59': PascalContextDataset59.METAINFO['classes'],
    'coco_object': ('background',) + COCOStuffDataset.METAINFO['classes'][:80],
    'coco_stuff164k': COCOStuffDataset.METAINFO['classes'],
    'cityscapes': CityscapesDataset.METAINFO['classes'],
    'ade20k': ADE20KDataset.METAINFO['classes'],
}
STUFF_WORDS = ('sky, wall, tree, wood, grass, road, sea, river, mountain, sands, desk, bed, '
               'building, cloud, lamp, door, window, wardrobe, ceiling, shelf, curtain, stair, '
               'floor, hill, rail, fence').split(', ')


def test_all_keys_shipped():
    assert list_class_name_keys() == sorted(KEYS)


@pytest.mark.parametrize('key', KEYS)
def test_line_count_matches_dataset(key):
    names = load_class_names(key)
    assert len(names) == NUM_CLASSES[key] == len(DATASET_OF[key].METAINFO['classes'])
    assert len(DATASET_OF[key].METAINFO['palette']) == len(names)


@pytest.mark.parametrize('key', KEYS)
def test_order_matches_mmseg_metainfo(key):
    names = load_class_names(key)
    for idx, (syns, ref) in enumerate(zip(names, MMSEG_ORDER[key])):
        if ref == 'background' and key in ('voc21', 'coco_object'):
            assert syns == STUFF_WORDS, f'{key}[0] must be the stuff-word list'
            continue
        assert name_matches(syns, ref), f'{key} line {idx + 1}: {syns} does not name MMSeg class {ref!r}'


@pytest.mark.parametrize('key', KEYS)
def test_synonyms_clean(key):
    text = open(class_names_path(key), encoding='utf-8').read()
    assert text.endswith('\n') and '\n\n' not in text
    for syns in load_class_names(key):
        assert len(set(syns)) == len(syns)
        assert all(s == s.strip() and s for s in syns)


def test_benchmark_synonyms():
    voc = load_class_names('voc21')
    assert voc[15][0] == 'person' and 'person in jacket' in voc[15]
    assert voc[20] == ['television monitor', 'tv monitor', 'monitor', 'television', 'screen']
    assert load_class_names('voc20') == voc[1:]
    assert load_class_names('coco_object')[0] == STUFF_WORDS
    assert load_class_names('context60')[1:] == load_class_names('context59')
    assert load_class_names('context60')[0] == ['background']


def test_load_by_path_and_errors(tmp_path):
    p = tmp_path / 'names.txt'
    p.write_text('cat, kitty\ndog\n\n')
    assert load_class_names(p) == [['cat', 'kitty'], ['dog']]
    assert load_class_names(str(p)) == [['cat', 'kitty'], ['dog']]
    (tmp_path / 'gap.txt').write_text('cat\n\ndog\n')
    with pytest.raises(ValueError, match='class 1 of file .*gap.txt is empty'):
        load_class_names(tmp_path / 'gap.txt')
    with pytest.raises(ValueError, match='empty synonym'):
        Vocabulary.parse('cat, , dog\n')
    with pytest.raises(ValueError, match='empty'):
        Vocabulary.parse('\n\n')
    with pytest.raises(ValueError, match='voc21'):
        load_class_names('no_such_key')
    with pytest.raises(ValueError, match='unknown class-name key'):
        class_names_path('../names')


@pytest.mark.parametrize('key', KEYS)
def test_shipped_vocabulary_fits_its_dataset_silently(key, recwarn):
    assert check_class_names(key, DATASET_OF[key].METAINFO['classes']) == []
    assert not [w for w in recwarn if 'differently' in str(w.message)]
