"""Every config under configs/ (except _base_ and toyworld): loads, matches the benchmark protocol,
its model builds with tiny random encoders, and one config per variant segments a tiny image."""
import glob
import os.path as osp
import re

import pytest
import torch

import gpua_mmseg.models  # noqa: F401  (placeholder + registries before mmseg)
import gpua_mmseg.datasets  # noqa: F401
from gpua_mmseg.datasets import NUM_CLASSES, load_class_names
from mmengine.config import Config
from mmseg.registry import DATASETS, MODELS

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
# configs/toyworld/ belongs to the toy world (tests/toyworld/ checks it)
CONFIGS = sorted(p for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
                 if '_base_' not in p and 'toyworld' not in p)
ALL_FILES = sorted(glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True))
KEYS = list(NUM_CLASSES)

# benchmarks.md: key -> (short side, SCLIP (scale, prob_thd), SC-CLIP (scale, prob_thd), area_thd)
PROTOCOL = {
    'voc21': (336, (65, 0.1), (50, 0.15), 0.1),
    'voc20': (336, (40, 0.0), (40, 0.0), None),
    'context60': (336, (50, 0.1), (40, 0.15), None),
    'context59': (336, (40, 0.0), (40, 0.0), None),
    'coco_object': (336, (50, 0.1), (55, 0.35), None),
    'coco_stuff164k': ((448, 336), (40, 0.0), (40, 0.0), None),
    'cityscapes': (560, (40, 0.0), (40, 0.0), None),
    'ade20k': (336, (40, 0.0), (40, 0.0), None),
}


def _rel(p):
    return osp.relpath(p, ROOT)


def _short_side(cfg):
    pipeline = cfg.test_dataloader.dataset.pipeline
    assert [t['type'] for t in pipeline] == ['LoadImageFromFile', 'Resize', 'LoadAnnotations',
                                             'PackSegInputs']
    resize = [pipeline[1]]
    assert resize[0]['keep_ratio']
    long_side, short = resize[0]['scale']
    assert long_side == 2048
    return short


METHODS = ('vanilla', 'maskclip', 'clearclip', 'naclip', 'sclip', 'scclip', 'proxyclip')
GPUA_ON = ('sclip', 'scclip', 'proxyclip')
# (logit_scale, prob_thd, area_thd) of the background datasets where a method's protocol sets them
BG_PROTOCOL = dict(
    proxyclip=dict(voc21=(40, 0.2, None), context60=(40, 0.15, None), coco_object=(40, 0.25, None)),
    clearclip=dict(voc21=(40, 0.5, None)))
PROXY_SHORT = dict(ade20k=448, cityscapes=448, coco_stuff164k=336)


def test_configs_exist():
    names = {osp.basename(p) for p in CONFIGS}
    expected = set()
    for k in KEYS:
        for m in METHODS:
            expected |= {f'{m}_vitb16_{k}.py', f'{m}_vitl14_{k}.py'}
        for m in GPUA_ON:
            expected |= {f'gpua_{m}_dinov3_vitb16_{k}.py', f'gpua_{m}_vitl14_dinov3_vitl16_{k}.py'}
    assert expected <= names, sorted(expected - names)


@pytest.mark.parametrize('path', ALL_FILES, ids=_rel)
def test_no_import_lines(path):
    # mmengine switches to its lazy-import format on any import line (install_notes pitfall 6)
    src = open(path, encoding='utf-8').read()
    assert not re.search(r'^\s*(import|from)\s', src, re.M)


@pytest.mark.parametrize('path', [p for p in CONFIGS if '/gpua/' not in p], ids=_rel)
def test_leaf_configs_are_a_few_lines(path):
    # one _base_ per method and per dataset: a leaf only names them and its own settings
    code = [ln for ln in open(path, encoding='utf-8') if ln.strip() and not ln.startswith('#')]
    assert len(code) <= 4, _rel(path)


NAME_RE = re.compile(r'^(?P<gpua>gpua_)?(?P<method>[a-z]+)_(?:dinov3_)?(?P<size>vitb16|vitl14)'
                     r'(?:_dinov3_vitl16)?_(?P<key>\w+)\.py$')


@pytest.mark.parametrize('path', CONFIGS, ids=_rel)
def test_config_loads_and_is_consistent(path):
    cfg = Config.fromfile(path)
    m = cfg.model
    assert m.type == 'GPUASegmentor'
    assert cfg.custom_imports['imports'] == ['gpua_mmseg.models', 'gpua_mmseg.datasets']
    assert cfg.test_evaluator == dict(type='IoUMetric', iou_metrics=['mIoU'])
    assert cfg.test_cfg == dict(type='TestLoop') and cfg.default_scope == 'mmseg'
    assert cfg.load_from is None and cfg.test_dataloader.batch_size == 1
    # plain DDP rejects frozen models: dist_test.sh needs the separate wrapper
    assert cfg.model_wrapper_cfg['type'] == 'MMSeparateDistributedDataParallel'
    match = NAME_RE.match(osp.basename(path))
    assert match, f'{_rel(path)}: name must be [gpua_]<method>_[dinov3_]vitb16_<key>.py or ' \
                  '[gpua_]<method>_vitl14[_dinov3_vitl16]_<key>.py'
    method, key, large = match['method'], match['key'], match['size'] == 'vitl14'
    assert m.clip == dict(name='ViT-L-14' if large else 'ViT-B-16', pretrained='openai')
    # the vocabulary and the dataset's label space must agree, or mIoU is meaningless
    ds = cfg.test_dataloader.dataset
    ds_cls = DATASETS.get(ds.type)
    assert ds_cls is not None, ds.type
    assert len(load_class_names(m.class_names)) == len(ds_cls.METAINFO['classes'])
    assert key == m.class_names and m.clip_mode == method
    assert (m.get('decode_head') is not None) == bool(match['gpua'])
    assert (m.get('vfm') is not None) == (bool(match['gpua']) or method == 'proxyclip')
    if m.get('vfm') is not None:
        size = 'large' if large else 'base'
        assert m.vfm == dict(name=f'vit_{size}_patch16_dinov3.lvd1689m', pretrained=True)
    # bug 9: background handling only where the dataset has a background class
    classes = [c.lower() for c in ds_cls.METAINFO['classes']]
    if 'background' in classes:
        assert m.bg_idx == classes.index('background')
    else:
        assert m.bg_idx in ('auto', None) and m.prob_thd == 0.0
    short, sclip, scclip, area = PROTOCOL[key]
    if method in ('sclip', 'scclip'):
        scale, thd = sclip if method == 'sclip' else scclip
        assert (m.logit_scale, m.prob_thd, m.area_thd) == (scale, thd, area)
        if isinstance(short, tuple):
            short = short[0] if method == 'sclip' else short[1]
        assert _short_side(cfg) == short
    elif method == 'proxyclip':
        assert _short_side(cfg) == PROXY_SHORT.get(key, 336)
        assert (m.slide_crop, m.slide_stride) == ((224 if key == 'cityscapes' else 336), 112)
        assert m.clip_mode_cfg == dict(beta=1.2, gamma=3.0)
    else:
        assert _short_side(cfg) == (448 if (method, key) == ('clearclip', 'voc21') else
                                    short if isinstance(short, int) else short[0])
    if key in BG_PROTOCOL.get(method, {}):
        assert (m.logit_scale, m.prob_thd, m.area_thd) == BG_PROTOCOL[method][key]
    if method == 'scclip':
        assert m.clip_mode_cfg == (
            dict(pre_adjust_idx=16, post_adjust_idx=6, multi_start_idx=8, multi_end_idx=19,
                 res_cls=0.1) if large else
            dict(pre_adjust_idx=8, post_adjust_idx=3, multi_start_idx=3, multi_end_idx=10,
                 res_cls=0.3))
    reduce = ds.get('reduce_zero_label', False)
    assert reduce == (key in ('voc20', 'context59', 'ade20k'))
    if large:   # the ViT-L config is its ViT-B sibling with larger encoders, nothing else
        sib = Config.fromfile(path.replace('vitl14_dinov3_vitl16', 'dinov3_vitb16')
                              .replace('vitl14', 'vitb16'))
        for k in set(m) | set(sib.model):
            if k not in ('clip', 'clip_mode_cfg', 'vfm', 'decode_head'):
                assert m.get(k) == sib.model.get(k), k
        assert cfg.test_dataloader == sib.test_dataloader


def tiny_clip(layers=12):
    from gpua_mmseg.models.clip import tiny_clip_model_cfg
    # SC-CLIP needs 12 blocks so its default layer indices (8 / 3 / 3..10) exist
    return dict(name='tiny', pretrained=None,
                model_cfg=tiny_clip_model_cfg(width=32, layers=layers, heads=2, embed_dim=16,
                                              text_width=32, text_layers=1, text_heads=2,
                                              context_length=16))


def _sample(h, w):
    from mmseg.structures import SegDataSample
    meta = dict(ori_shape=(h, w), img_shape=(h, w), pad_shape=(h, w),
                padding_size=[0, 0, 0, 0])
    return SegDataSample(metainfo=meta)


def tiny_vfm(cfg):
    """Tiny random VFM of the same timm architecture family (no download)."""
    cfg.model.vfm = dict(name=cfg.model.vfm['name'], pretrained=False,
                         model_kwargs=dict(embed_dim=24, depth=1, num_heads=2, img_size=64))


def tiny_gpua(cfg, tmp_path):
    """Tiny VFM + a random orthogonal artifact for this config's vocabulary, so GPUA configs
    build offline."""
    from gpua_mmseg.alignment import AlignmentMap
    tiny_vfm(cfg)
    g = torch.Generator().manual_seed(0)
    w = torch.linalg.qr(torch.randn(24, 16, generator=g, dtype=torch.float64))[0].float()
    path = str(tmp_path / 'align.safetensors')
    vocab = load_class_names(cfg.model.class_names)
    AlignmentMap(w, dict(vfm=cfg.model.vfm['name'], vlm='tiny', vocabulary=vocab)).save(path)
    cfg.model.decode_head['alignment_path'] = path


def _variant(path):
    m = NAME_RE.match(osp.basename(path))
    return ('gpua_' if m['gpua'] else '') + m['method']


# one config per variant runs an image (voc21: background handling, synonyms, thresholds)
RUN_ONE = {_variant(p): p for p in reversed(CONFIGS) if p.endswith('vitb16_voc21.py')}


def _tiny_model(path, tmp_path):
    cfg = Config.fromfile(path)
    large = 'vitl14' in osp.basename(path)
    cfg.model.clip = tiny_clip((24 if large else 12) if cfg.model.clip_mode == 'scclip' else 2)
    if cfg.model.get('decode_head') is not None:
        tiny_gpua(cfg, tmp_path)
    elif cfg.model.get('vfm') is not None:
        tiny_vfm(cfg)
    cfg.model.templates = ['a photo of a {}.']
    cfg.model.slide_crop, cfg.model.slide_stride = 64, 32
    torch.manual_seed(0)
    return cfg, MODELS.build(cfg.model).eval()


@pytest.mark.parametrize('path', CONFIGS, ids=_rel)
def test_model_builds_tiny(path, tmp_path):
    cfg, model = _tiny_model(path, tmp_path)
    assert model.clip_mode == cfg.model.clip_mode
    assert (model.vfm_encoder is not None) == (cfg.model.get('vfm') is not None)
    assert (model.decode_head is not None) == (cfg.model.get('decode_head') is not None)
    classes = [c.lower() for c in DATASETS.get(cfg.test_dataloader.dataset.type).METAINFO['classes']]
    assert model.bg_idx == (classes.index('background') if 'background' in classes else None)
    assert model.num_classes == NUM_CLASSES[cfg.model.class_names]


def test_every_variant_runs_one_image():
    assert set(RUN_ONE) == set(METHODS) | {f'gpua_{m}' for m in GPUA_ON}


@pytest.mark.parametrize('path', sorted(RUN_ONE.values()), ids=_rel)
def test_model_runs_one_image_tiny(path, tmp_path):
    cfg, model = _tiny_model(path, tmp_path)
    h, w = 48, 80
    img = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
    with torch.no_grad():
        out = model.test_step(dict(inputs=[img], data_samples=[_sample(h, w)]))
    n_cls = NUM_CLASSES[cfg.model.class_names]
    pred = out[0].pred_sem_seg.data
    assert pred.shape == (1, h, w)
    assert int(pred.min()) >= 0 and int(pred.max()) < n_cls
    scores = out[0].seg_logits.data
    assert scores.shape == (n_cls, h, w) and torch.isfinite(scores).all()
