"""Issue 8, part B: background handling (bug 9), any image size for every VFM (bug 10), one crop
loop, MMSeg's test_cfg, GPUAHead inside MMSeg's own EncoderDecoder, and docs/USAGE.md's config
examples run literally (fit, then test) on tiny random models."""
import os
import os.path as osp
import re
import runpy
import subprocess
import sys

import pytest
import torch

import gpua_mmseg.models  # noqa: F401  (mmcv-lite placeholder before mmseg)
from gpua_mmseg.alignment import AlignmentMap
from gpua_mmseg.fitting.extract import extract_image_features
from gpua_mmseg.models.clip import build_clip_encoder, tiny_clip_model_cfg
from gpua_mmseg.models.segmentor import GPUASegmentor
from gpua_mmseg.models.sliding import crop_boxes
from gpua_mmseg.models.vfm import build_vfm_encoder
from mmengine.config import Config, ConfigDict
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from _helpers import flatten_options

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
VOCAB = ['cat', 'dog', 'car', 'tree']          # one query per class, no background
VFMS = {16: 'vit_base_patch16_dinov3.lvd1689m', 14: 'vit_base_patch14_reg4_dinov2'}
CLIP_CFG = tiny_clip_model_cfg(width=32, layers=2, heads=2, embed_dim=16, text_width=32,
                               text_layers=1, text_heads=2, context_length=16)
VFM_KW = dict(embed_dim=24, depth=1, num_heads=2, img_size=56)


@pytest.fixture(scope='module')
def clip():
    torch.manual_seed(0)
    return build_clip_encoder(dict(name='tiny', pretrained=None, model_cfg=CLIP_CFG),
                              mode='sclip').eval()


@pytest.fixture(scope='module')
def vfms():
    torch.manual_seed(1)
    return {p: build_vfm_encoder(dict(name=n, pretrained=False, model_kwargs=VFM_KW)).eval()
            for p, n in VFMS.items()}


def artifact(path, clip, vfm, vocab=VOCAB, seed=0):
    """A random orthogonal map recording the identity of exactly these encoders."""
    from gpua_mmseg.models.identity import artifact_identity
    g = torch.Generator().manual_seed(seed)
    w = torch.linalg.qr(torch.randn(vfm.embed_dim, clip.embed_dim, generator=g,
                                    dtype=torch.float64))[0].float()
    ident = artifact_identity(clip, vfm, 'sclip', 'query', vocab)
    AlignmentMap(w, dict(identity=ident, vfm=vfm.name, vlm='tiny', vocabulary=vocab,
                         vocab_hash=ident['vocab_hash'])).save(str(path))
    return str(path)


def segmentor(clip, vfm=None, path=None, lam=0.5, vocab=VOCAB, **kw):
    kw = dict(dict(slide_crop=64, slide_stride=32, crop_batch_size=4), **kw)
    if vfm is not None:
        kw.update(vfm=vfm, decode_head=dict(type='GPUAHead', alignment_path=path,
                                            fusion_weight=lam))
    return GPUASegmentor(clip=clip, clip_mode='sclip', class_names=vocab, templates=['{}'],
                         logit_scale=40.0, **kw).eval()


def batch(h, w, ori=None, seed=2):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, h, w, generator=g) * 255
    meta = dict(img_shape=(h, w), ori_shape=ori or (h, w), pad_shape=(h, w),
                padding_size=[0, 0, 0, 0])
    return x, [SegDataSample(metainfo=meta)]


def predict(model, h, w, ori=None):
    x, samples = batch(h, w, ori)
    with torch.no_grad():
        out = model.predict(x, samples)[0]
    return out.seg_logits.data, out.pred_sem_seg.data[0]


# ------------------------------------------------------------------ bug 9
def _tiny_from_config(rel):
    cfg = Config.fromfile(osp.join(ROOT, rel))
    cfg.model.clip = dict(name='tiny', pretrained=None, model_cfg=CLIP_CFG)
    cfg.model.templates = ['{}']
    return cfg


@pytest.mark.parametrize('key, bg', [('voc20', None), ('context59', None), ('ade20k', None),
                                     ('cityscapes', None), ('coco_stuff164k', None),
                                     ('voc21', 0), ('context60', 0), ('coco_object', 0)])
def test_bug9_no_background_dataset_has_no_background_class(key, bg):
    cfg = _tiny_from_config(f'configs/sclip/sclip_vitb16_{key}.py')
    model = MODELS.build(cfg.model)
    assert model.bg_idx == bg
    if bg is None:
        # class 0 of e.g. VOC20 (aeroplane) is a class like any other: area_thd may drop it
        assert model.prob_thd == 0.0
        cfg.model.prob_thd = 0.1
        with pytest.raises(ValueError, match=r'prob_thd=0\.1 .*background class.*bg_idx'):
            MODELS.build(cfg.model)


def test_bug9_set_vocabulary_rebuilds_background_and_thresholds(clip):
    seg = segmentor(clip, vocab='cat; dog; background', prob_thd=0.2)
    assert seg.bg_idx == 2 and seg.prob_thd == 0.2 and seg.num_classes == 3
    assert seg.set_vocabulary('cat, kitty; dog') is seg
    assert seg.bg_idx is None and seg.prob_thd == 0.0
    assert seg.num_classes == 2 and seg.query_to_class.tolist() == [0, 0, 1]
    scores, labels = predict(seg, 32, 48)
    assert scores.shape == (2, 32, 48) and labels.max() <= 1
    seg.set_vocabulary(['sky', 'cat'], bg_idx=0)
    assert seg.bg_idx == 0 and seg.prob_thd == 0.2
    with pytest.raises(ValueError, match='bg_idx=5'):
        seg.set_vocabulary(['sky', 'cat'], bg_idx=5)


def test_bug9_vfm_not_run_at_lambda_one(clip, vfms, tmp_path, monkeypatch):
    vfm = vfms[16]
    path = artifact(tmp_path / 'a.safetensors', clip, vfm)
    calls = []
    original = type(vfm).patch_features

    def counting(self, images):
        calls.append(tuple(images.shape))
        return original(self, images)

    monkeypatch.setattr(type(vfm), 'patch_features', counting)
    base = predict(segmentor(clip), 64, 96)
    fused = predict(segmentor(clip, vfm, path, lam=1.0), 64, 96)
    assert calls == []
    assert torch.equal(base[0], fused[0]) and torch.equal(base[1], fused[1])
    mixed = predict(segmentor(clip, vfm, path, lam=0.5), 64, 96)
    assert calls and not torch.allclose(mixed[0], base[0])


# ------------------------------------------------------------------ bug 10
@pytest.mark.parametrize('patch', [14, 16])
@pytest.mark.parametrize('size', [(1, 1), (13, 200), (223, 225), (64, 64)])
def test_bug10_dinov2_any_size(clip, vfms, tmp_path, patch, size):
    vfm = vfms[patch]
    tokens = vfm.patch_features(vfm.normalize(torch.rand(1, 3, *size)))
    # the token grid covers the whole input: nearest whole number of patches, at least one
    assert tokens.shape[1:3] == tuple(max(1, round(s / patch)) for s in size)
    path = artifact(tmp_path / 'a.safetensors', clip, vfm)
    seg = segmentor(clip, vfm, path, lam=0.0)
    for crop in (64, 0):                          # sliding window and whole image
        seg.slide_crop, seg.slide_stride = crop, (32 if crop else None)
        scores, labels = predict(seg, *size, ori=(size[0] + 3, size[1] + 1))
        assert scores.shape == (len(VOCAB), size[0] + 3, size[1] + 1)
        assert torch.isfinite(scores).all() and labels.shape == scores.shape[1:]
    seg.slide_crop, seg.slide_stride = 64, 32
    feats = extract_image_features(seg, vfm, torch.rand(3, *size))
    n_patches = sum(-(-(y2 - y1) // 16) * -(-(x2 - x1) // 16)
                    for y1, y2, x1, x2 in crop_boxes(*size, 64, 32))
    assert feats['clip'].shape[0] == feats['vfm'].shape[0] == n_patches


# ------------------------------------------------------------------ one crop loop
def test_inference_and_feature_extraction_see_the_same_crops(clip, vfms, tmp_path, monkeypatch):
    vfm = vfms[14]
    seg = segmentor(clip, vfm, artifact(tmp_path / 'a.safetensors', clip, vfm))
    seen = []
    original = type(clip).patch_features

    def recording(self, images, *args, **kwargs):
        seen.append(images.detach().clone())
        return original(self, images, *args, **kwargs)

    monkeypatch.setattr(type(clip), 'patch_features', recording)
    x, samples = batch(50, 100)          # shorter than the crop along H: padded crops
    with torch.no_grad():
        seg.predict(x, samples)
    at_inference = torch.cat(seen)
    seen.clear()
    out = extract_image_features(seg, vfm, x[0] / 255.0)
    at_fit = torch.cat(seen)
    assert at_inference.shape == at_fit.shape == (len(crop_boxes(50, 100, 64, 32)), 3, 64, 64)
    key = lambda t: sorted(range(len(t)), key=lambda i: t[i].sum().item())  # noqa: E731
    torch.testing.assert_close(at_inference[key(at_inference)], at_fit[key(at_fit)])
    assert out['clip'].shape[0] == at_fit.shape[0] * 4 * 4


# ------------------------------------------------------------------ MMSeg test_cfg
def test_window_accepted_as_mmseg_test_cfg(clip):
    ref = predict(segmentor(clip), 70, 100)
    got = predict(segmentor(clip, slide_crop=None, slide_stride=None,
                            test_cfg=dict(mode='slide', crop_size=(64, 64), stride=(32, 32))),
                  70, 100)
    assert torch.equal(ref[0], got[0])
    whole = segmentor(clip, slide_crop=None, slide_stride=None, test_cfg=dict(mode='whole'))
    assert whole.slide_crop == 0
    torch.testing.assert_close(predict(whole, 70, 100)[0],
                               predict(segmentor(clip, slide_crop=0), 70, 100)[0])
    with pytest.raises(ValueError, match='disagree with test_cfg'):
        segmentor(clip, test_cfg=dict(mode='slide', crop_size=(96, 96), stride=(48, 48)))
    with pytest.raises(ValueError, match="mode='slide' needs crop_size"):
        segmentor(clip, slide_crop=None, slide_stride=None, test_cfg=dict(mode='slide'))


# ------------------------------------------------------------------ EncoderDecoder
@pytest.mark.parametrize('patch', [16, 14])
def test_encoder_decoder_matches_gpua_segmentor(clip, vfms, tmp_path, patch):
    vfm = vfms[patch]
    path = artifact(tmp_path / 'a.safetensors', clip, vfm)
    # MMSeg's slide_inference hands the backbone one crop at a time: the EncoderDecoder form
    # is the segmentor's vfm_window='crop'
    seg = segmentor(clip, vfm, path, lam=0.7, vfm_window='crop')
    from mmengine.registry import init_default_scope
    init_default_scope('mmseg')        # as default_runtime.py's default_scope does
    encdec = MODELS.build(ConfigDict(
        type='EncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor', mean=[0., 0., 0.], std=[1., 1., 1.],
                               bgr_to_rgb=True, pad_val=0, seg_pad_val=255),
        backbone=dict(type='GPUATwoTowerBackbone', clip=clip, clip_mode='sclip', vfm=vfm,
                      class_names=VOCAB, templates=['{}']),
        decode_head=dict(type='GPUAHead', alignment_path=path, fusion_weight=0.7,
                         num_classes=len(VOCAB), logit_scale=40.0),
        test_cfg=dict(mode='slide', crop_size=(64, 64), stride=(32, 32)))).eval()
    assert type(encdec).__name__ == 'EncoderDecoder' and encdec.num_classes == len(VOCAB)
    for h, w, ori in ((80, 112, (60, 90)), (64, 64, None)):
        want_scores, want_labels = predict(seg, h, w, ori)
        got_logits, got_labels = predict(encdec, h, w, ori)
        torch.testing.assert_close(got_logits.softmax(0), want_scores, atol=1e-5, rtol=0)
        assert torch.equal(got_labels, want_labels)
    with pytest.raises(RuntimeError, match='training-free'):
        encdec.decode_head.loss_by_feat(None, [])


# ------------------------------------------------------------------ docs/USAGE.md, literally
def _usage_block(first_line):
    text = open(osp.join(ROOT, 'docs', 'USAGE.md'), encoding='utf-8').read()
    blocks = re.findall(r'```python\n(.*?)```', text, re.S)
    found = [b for b in blocks if b.startswith(first_line + '\n')]
    assert len(found) == 1, f'docs/USAGE.md has no ```python block starting {first_line!r}'
    return found[0]


def _tiny_options(prefix, data_root, names):
    clip = tiny_clip_model_cfg(width=32, layers=3, heads=2, embed_dim=16, text_width=32,
                               text_layers=1, text_heads=2, context_length=16)
    return ([f'{prefix}.clip.name=tiny', f'{prefix}.clip.pretrained=None',
             f'{prefix}.class_names={names}', f'{prefix}.templates=[{{}}]',
             f'{prefix}.vfm.pretrained=False', f'{prefix}.vfm.model_kwargs.embed_dim=24',
             f'{prefix}.vfm.model_kwargs.depth=1', f'{prefix}.vfm.model_kwargs.num_heads=2',
             f'{prefix}.vfm.model_kwargs.img_size=64',
             # SC-CLIP's ViT-B/16 layer indices do not exist in a 3-block CLIP
             f'{prefix}.clip_mode_cfg.pre_adjust_idx=1', f'{prefix}.clip_mode_cfg.post_adjust_idx=0',
             f'{prefix}.clip_mode_cfg.multi_start_idx=0', f'{prefix}.clip_mode_cfg.multi_end_idx=2',
             f'{prefix}.clip_mode_cfg.lof_k=5',
             f'test_dataloader.dataset.data_root={data_root}', 'test_dataloader.num_workers=0',
             'test_dataloader.dataset.pipeline.1.scale=(2048,64)', 'randomness.seed=0']
            + list(flatten_options(f'{prefix}.clip.model_cfg', clip)))


def test_usage_md_config_examples_fit_then_test(tmp_path, monkeypatch, capsys):
    toy = tmp_path / 'toy'
    # 4 images of 64x96 = 96 patch rows: the fit needs at least one per prototype (60 queries)
    r = subprocess.run([sys.executable, 'tools/make_toy_dataset.py', str(toy), '--n', '4',
                        '--size', '64', '96'], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    names = tmp_path / 'classes.txt'
    names.write_text(open(osp.join(ROOT, 'gpua_mmseg/datasets/class_names/voc21.txt')).read())
    # "an existing config for your own dataset": here the benchmarks' VOC setup
    (tmp_path / 'my_dataset.py').write_text(
        f"_base_ = [{osp.join(ROOT, 'configs/_base_/datasets/voc21.py')!r},\n"
        f"          {osp.join(ROOT, 'configs/_base_/default_runtime.py')!r}]\n")
    (tmp_path / 'my_gpua.py').write_text(_usage_block('# my_gpua.py'))
    (tmp_path / 'my_gpua_encdec.py').write_text(_usage_block('# my_gpua_encdec.py'))
    monkeypatch.chdir(tmp_path)
    # python tools/fit_alignment.py my_gpua.py --out work_dirs/my_gpua.safetensors
    fit_main = runpy.run_path(osp.join(ROOT, 'tools/fit_alignment.py'))['main']
    assert fit_main(['my_gpua.py', '--out', 'work_dirs/my_gpua.safetensors',
                     '--fit-options', 'refine_steps=5', '--cfg-options']
                    + _tiny_options('model', toy, names)) == 0
    assert osp.isfile('work_dirs/my_gpua.safetensors')
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    for config, prefix in (('my_gpua.py', 'model'), ('my_gpua_encdec.py', 'model.backbone')):
        # python tools/test.py <config>
        r = subprocess.run([sys.executable, osp.join(ROOT, 'tools/test.py'), config,
                            '--cfg-options'] + _tiny_options(prefix, toy, names),
                           capture_output=True, text=True, env=env)
        assert r.returncode == 0, config + r.stdout[-2000:] + r.stderr[-3000:]
        assert re.search(r'metrics: .*mIoU=([0-9.]+)', r.stdout), r.stdout[-2000:]


# ------------------------------------------------------------------ public segmentor API
def test_attach_gpua_checks_the_map_and_detaches(clip, vfms, tmp_path):
    vfm = vfms[16]
    path = artifact(tmp_path / 'a.safetensors', clip, vfm)
    seg = segmentor(clip)
    base = predict(seg, 64, 96)
    head = dict(type='GPUAHead', alignment_path=path, fusion_weight=0.0)
    assert seg.attach_gpua(vfm, head) is seg and seg.decode_head.needs_vfm
    assert not torch.allclose(predict(seg, 64, 96)[0], base[0])
    seg.set_vocabulary(VOCAB[:3])               # the map was fitted for four classes
    with pytest.raises(ValueError, match='vocab_hash') as err:
        seg.check_alignment()
    assert f'tools/fit_alignment.py CONFIG --out {path}' in str(err.value)
    with pytest.raises(ValueError, match='vfm'):     # another VFM than the one it was fitted on
        segmentor(clip).attach_gpua(vfms[14], head)
    seg.set_vocabulary(VOCAB)
    seg.attach_gpua(None, None)
    assert seg.decode_head is None and torch.equal(predict(seg, 64, 96)[0], base[0])
