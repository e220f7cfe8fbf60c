"""Issue 8, part A: one vocabulary, one artifact identity, demo maps, offline weights, class names.

One test per bug (``test_bugN_...``), each through the entry point users call (the demo's
``main``, ``OpenVocabSegmenter``, the CLIP / VFM builders, MMEngine's ``Runner``), with tiny
random models; then the design items (one atomic writer that respects the umask, templates
from open_clip, no second parser).
"""
import os
import os.path as osp
import shutil

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

import gpua_mmseg.models  # noqa: F401  (mmcv-lite placeholder before mmseg)
from gpua_mmseg.alignment import AlignmentMap
from gpua_mmseg.vocabulary import Vocabulary
from test_demo import TINY_GPUA, _config, demo  # noqa: F401  (the demo fixture)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
VFM_NAME = 'vit_base_patch16_dinov3.lvd1689m'
VFM_TINY = dict(embed_dim=32, depth=1, num_heads=2, img_size=64)


@pytest.fixture
def gpua_setup(tmp_path, monkeypatch):
    """(tiny GPUA config whose own artifact is ``config_art``, image folder, cache folder)."""
    cache = tmp_path / 'cache'
    monkeypatch.setenv('GPUA_MMSEG_CACHE', str(cache))
    config_art = tmp_path / 'config_artifact.safetensors'
    cfg = _config(tmp_path / 'tiny_gpua.py', TINY_GPUA.replace('{art}', str(config_art)))
    imgs = tmp_path / 'imgs'
    imgs.mkdir()
    for name in ('chelsea', 'coffee'):
        Image.fromarray(getattr(skimage.data, name)()[:160, :200]).save(imgs / f'{name}.png')
    return cfg, str(imgs), cache, config_art


def _demo_args(cfg, imgs, out, classes, *extra):
    return [imgs, '--classes', classes, '--config', cfg, '--out', str(out), '--fit-options',
            'refine_steps=5', *extra]


def _alignments(cache):
    folder = cache / 'alignments'
    return sorted(os.listdir(folder)) if folder.is_dir() else []


def _fit_random(demo, gpua_setup, out, classes):
    """``demo --fit`` with random weights into an empty cache -> the artifact's path."""
    cfg, imgs, cache, _ = gpua_setup
    assert demo.main(_demo_args(cfg, imgs, out, classes, '--weights', 'random', '--fit')) == 0
    (art,) = _alignments(cache)
    return str(cache / 'alignments' / art)


# ---------------------------------------------------------------------------- bug 1
def test_bug1_vocabulary_one_format(demo, gpua_setup, tmp_path, capsys):
    """demo --fit with synonyms, then --alignment on that file: same vocabulary, GPUA on."""
    cfg, imgs, cache, _ = gpua_setup
    classes = 'cat, kitty; sofa; background'
    art = _fit_random(demo, gpua_setup, tmp_path / 'o1', classes)
    amap = AlignmentMap.load(art)
    want = Vocabulary.parse(classes)
    assert amap.meta['vocabulary'] == want.classes == [['cat', 'kitty'], ['sofa'], ['background']]
    assert amap.meta['vocab_hash'] == amap.identity['vocab_hash'] == want.hash
    capsys.readouterr()
    rc = demo.main(_demo_args(cfg, imgs, tmp_path / 'o2', classes, '--weights', 'random',
                              '--alignment', art))
    err = capsys.readouterr().err
    assert rc == 0, err
    assert 'another vocabulary' not in err and 'ERROR' not in err
    # the API sees the same: GPUA attached, vocabulary accepted
    from gpua_mmseg.apis import OpenVocabSegmenter
    seg = OpenVocabSegmenter(cfg, classes=classes, weights='random', device='cpu', alignment=art)
    assert seg.is_gpua and seg.gpua_vocabulary_matches()


# ---------------------------------------------------------------------------- bug 2
def _tiny_clip(**kw):
    from gpua_mmseg.models.clip import build_clip_encoder, tiny_clip_model_cfg
    torch.manual_seed(0)
    return build_clip_encoder(dict(name='tiny', pretrained=None, model_cfg=tiny_clip_model_cfg(**kw)))


def test_bug2_one_class_name_parser(tmp_path):
    """'potted plant,houseplant' is one class with two synonyms on every path."""
    from gpua_mmseg.datasets import load_class_names
    from gpua_mmseg.models.text_classifier import TextClassifier
    f = tmp_path / 'names.txt'
    f.write_text('background\npotted plant,houseplant\ncat, kitty\n')
    want = [['background'], ['potted plant', 'houseplant'], ['cat', 'kitty']]
    tc = TextClassifier(_tiny_clip(), str(f), ['a {}.'])       # what the model uses
    assert tc.class_names == want and tc.queries == ['background', 'potted plant',
                                                     'houseplant', 'cat', 'kitty']
    assert tc.query_to_class.tolist() == [0, 1, 1, 2, 2]
    assert load_class_names(str(f)) == want                           # datasets
    text = 'background; potted plant,houseplant; cat, kitty'
    assert Vocabulary.parse(text).classes == want                    # demo / API strings
    assert Vocabulary.parse(['background', 'potted plant,houseplant', ['cat', 'kitty']]) \
        .classes == want                                              # lists
    # and the model's own class scores follow that grouping
    scores = tc.class_scores(torch.tensor([[0.1, 0.2, 0.9, 0.3, 0.4]]))
    torch.testing.assert_close(scores, torch.tensor([[0.1, 0.9, 0.4]]))


# ---------------------------------------------------------------------------- bug 3
def _save_tiny_weights(tmp_path):
    """Files for --clip-weights / --vfm-weights with the demo config's tiny architectures."""
    from gpua_mmseg.models.clip import create_open_clip
    from gpua_mmseg.models.vfm import build_vfm_encoder
    from test_demo import TINY_MODEL
    ns = {}
    exec(TINY_MODEL.replace('{extra}', ''), {}, ns)  # the demo config's CLIP architecture
    paths = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model, _ = create_open_clip('tiny', None, model_cfg=ns['model']['clip']['model_cfg'])
        p = tmp_path / f'clip{seed}.pt'
        torch.save(model.state_dict(), p)
        paths.append(str(p))
    vfm = build_vfm_encoder(dict(name=VFM_NAME, pretrained=False, model_kwargs=VFM_TINY))
    torch.save(vfm.model.state_dict(), tmp_path / 'vfm.pth')
    return paths, str(tmp_path / 'vfm.pth')


def test_bug3_demo_maps_keyed_by_weights(demo, gpua_setup, tmp_path, capsys):
    """A map fitted with random weights is not reused with real ones, nor across CLIP files."""
    cfg, imgs, cache, _ = gpua_setup
    (clip1, clip2), vfm = _save_tiny_weights(tmp_path)
    classes = 'cat; cup; background'
    runs = [('--weights', 'random'), ('--clip-weights', clip1, '--vfm-weights', vfm),
            ('--clip-weights', clip1, '--vfm-weights', vfm),
            ('--clip-weights', clip2, '--vfm-weights', vfm)]
    reused = []
    for i, extra in enumerate(runs):
        capsys.readouterr()
        assert demo.main(_demo_args(cfg, imgs, tmp_path / f'o{i}', classes, *extra,
                                    '--fit')) == 0
        reused.append('fitted earlier' in capsys.readouterr().out)
    assert reused == [False, False, True, False]
    assert len(_alignments(cache)) == 3


# ---------------------------------------------------------------------------- bug 4
def test_bug4_fit_never_fatal_on_vocabulary_mismatch(demo, gpua_setup, tmp_path, capsys):
    """The config's own artifact (fitted for another vocabulary) exists: --fit still fits."""
    cfg, imgs, cache, config_art = gpua_setup
    assert demo.main(_demo_args(cfg, imgs, tmp_path / 'o1', 'dog; grass; background',
                                '--weights', 'random', '--fit')) == 0
    (first,) = _alignments(cache)
    shutil.copy(cache / 'alignments' / first, config_art)  # as tools/fit_alignment.py leaves it
    capsys.readouterr()
    assert demo.main(_demo_args(cfg, imgs, tmp_path / 'o2', 'cat; sofa; background',
                                '--weights', 'random', '--fit')) == 0
    assert 'fitting a GPUA map' in capsys.readouterr().out
    assert len(_alignments(cache)) == 2
    # without --fit the other vocabulary's map still runs (a warning, not a failure)
    assert demo.main(_demo_args(cfg, imgs, tmp_path / 'o3', 'bird; tree; background',
                                '--weights', 'random')) == 0
    assert 'another vocabulary' in capsys.readouterr().err


# ---------------------------------------------------------------------------- bug 5
def _openai_convert_weights(sd):
    """What OpenAI's ``clip.model.convert_weights`` leaves: conv / linear / attention matrices
    and the projections in fp16, LayerNorms and embeddings in fp32."""
    half = ('conv1.weight', 'in_proj_weight', 'in_proj_bias', 'out_proj.weight', 'out_proj.bias',
            'c_fc.weight', 'c_fc.bias', 'c_proj.weight', 'c_proj.bias')
    return {k: (v.half() if k.endswith(half) or k in ('text_projection', 'visual.proj') else v)
            for k, v in sd.items()}


def test_bug5_activation_in_text_cache_and_openai_layout(tmp_path, monkeypatch):
    from gpua_mmseg.models.clip import build_clip_encoder, create_open_clip, tiny_clip_model_cfg
    from gpua_mmseg.models.text_classifier import TextClassifier
    monkeypatch.setenv('GPUA_MMSEG_CACHE', str(tmp_path / 'cache'))
    torch.manual_seed(0)
    src, _ = create_open_clip('tiny', None, model_cfg=tiny_clip_model_cfg(quick_gelu=False))
    ckpt = tmp_path / 'tiny.pt'
    torch.save(src.state_dict(), ckpt)
    embs = {}
    for qg in (False, True):
        enc = build_clip_encoder(dict(name='tiny', pretrained=str(ckpt), quick_gelu=qg,
                                      model_cfg=tiny_clip_model_cfg(quick_gelu=False)))
        assert enc.info['pretrained'] == str(ckpt)  # disk cache on
        embs[qg] = TextClassifier(enc, ['cat', 'dog'], ['a photo of a {}.']).embeddings
    assert len(os.listdir(tmp_path / 'cache' / 'text_embeddings')) == 2
    assert not torch.allclose(embs[False], embs[True], atol=1e-4)

    # OpenAI's plain state dict (its mixed precision; with and without its scalar entries)
    sd = _openai_convert_weights(src.state_dict())
    torch.save(sd, tmp_path / 'openai_plain.pt')
    extra = dict(input_resolution=torch.tensor(32), context_length=torch.tensor(77),
                 vocab_size=torch.tensor(49408))
    torch.save(dict(sd, **extra), tmp_path / 'openai_with_scalars.pt')
    for name in ('openai_plain.pt', 'openai_with_scalars.pt'):
        enc = build_clip_encoder(dict(name='tiny', pretrained=str(tmp_path / name),
                                      model_cfg=tiny_clip_model_cfg(quick_gelu=False)))
        assert enc.info['quick_gelu'], name
        assert type(enc.model.visual.transformer.resblocks[0].mlp.gelu).__name__ == 'QuickGELU'
    # open_clip's own single-dtype file keeps GELU
    enc = build_clip_encoder(dict(name='tiny', pretrained=str(ckpt),
                                  model_cfg=tiny_clip_model_cfg(quick_gelu=False)))
    assert not enc.info['quick_gelu']


# ---------------------------------------------------------------------------- bug 6
def test_bug6_identity_covers_clip_mode_and_weights(demo, gpua_setup, tmp_path):
    from gpua_mmseg.apis import OpenVocabSegmenter
    cfg, imgs, cache, _ = gpua_setup
    classes = 'cat; sofa; background'
    art = _fit_random(demo, gpua_setup, tmp_path / 'o', classes)
    ident = AlignmentMap.load(art).identity
    assert set(ident) >= {'vfm', 'vfm_weights', 'vlm', 'vlm_weights', 'vlm_activation',
                          'clip_mode', 'prototype_mode', 'vocab_hash', 'method'}
    assert ident['clip_mode'] == 'sclip' and ident['vlm_activation'] == 'quick_gelu'
    # the same map under another CLIP mode (an SCLIP map in a MaskCLIP-mode config)
    with pytest.raises(ValueError, match=r"clip_mode: artifact 'sclip', expected 'maskclip'"):
        OpenVocabSegmenter(cfg, classes=classes, weights='random', device='cpu', alignment=art,
                           cfg_options={'model.clip_mode': 'maskclip'})
    # ... under other weights (another seed of the random init)
    with pytest.raises(ValueError, match=r'vlm_weights: artifact .*\n.*vfm_weights|vlm_weights'):
        OpenVocabSegmenter(cfg, classes=classes, weights='random', device='cpu', alignment=art,
                           seed=7)
    # an edited vocabulary list that keeps the old hash is rejected on load (one check)
    amap = AlignmentMap.load(art)
    amap.meta['vocabulary'] = [['dog'], ['sofa'], ['background']]
    edited = str(tmp_path / 'edited.safetensors')
    amap.save(edited)
    with pytest.raises(ValueError, match='edited.safetensors.*vocabulary'):
        AlignmentMap.load(edited)
    # the method is recorded but not part of the comparison
    AlignmentMap.load(art).check_identity(dict(ident, method='sotalign'), 'x')


# ---------------------------------------------------------------------------- bug 7
def _tiny_ade(root):
    for sub in ('images/validation', 'annotations/validation'):
        os.makedirs(root / sub)
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(
            root / 'images/validation' / f'ADE_val_{i}.jpg')
        Image.fromarray(rng.integers(0, 151, (40, 48), dtype=np.uint8)).save(
            root / 'annotations/validation' / f'ADE_val_{i}.png')


def test_bug7_class_count_mismatch_is_an_error(tmp_path):
    """A config on MMSeg's own ade20k.py that forgot class_names: MMEngine's Runner (what
    tools/test.py and MMSeg's test.py run) stops before scoring 21 names as 150 classes."""
    from mmengine.config import Config
    from mmengine.runner import Runner
    from test_api import TINY_CLIP
    _tiny_ade(tmp_path / 'ade')
    (tmp_path / 'cfg.py').write_text(
        f"_base_ = ['{ROOT}/configs/_base_/models/clip_baseline.py',\n"
        "          'mmseg::_base_/datasets/ade20k.py',\n"
        f"          '{ROOT}/configs/_base_/default_runtime.py']\n"
        "custom_imports = dict(imports=['gpua_mmseg.models'], allow_failed_imports=False)\n"
        f"model = dict(clip={TINY_CLIP!r}, templates=['a {{}}.'], slide_crop=64,\n"
        "             slide_stride=32, bg_idx=None)\n"
        f"test_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(data_root='{tmp_path / 'ade'}'))\n"
        'train_dataloader = val_dataloader = val_evaluator = None  # evaluation only\n'
        "test_cfg = dict(type='TestLoop')\n")
    cfg = Config.fromfile(str(tmp_path / 'cfg.py'))
    cfg.work_dir = str(tmp_path / 'wd')
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ValueError, match=r"model.class_names \(voc21\) has 21 classes but the "
                                         r"test dataset ADE20KDataset has 150.*'ade20k'"):
        runner.test()


def test_bug7_name_mismatch_is_a_warning():
    from gpua_mmseg.datasets import check_class_names
    with pytest.warns(UserWarning, match=r"index 1: vocabulary \['dog'\] vs dataset 'cat'"):
        bad = check_class_names('background; dog; car', ['background', 'cat', 'car'])
    assert len(bad) == 1


# ---------------------------------------------------------------------------- bug 8
def test_bug8_cached_weights_used_by_every_builder(tmp_path, monkeypatch):
    """With files in GPUA_MMSEG_CACHE and no network, pretrained='openai' / True load them
    where the encoders are built (so tools/test.py, fit_alignment.py and MMSeg's test.py,
    which build from the config, all get it)."""
    from gpua_mmseg.models.clip import create_open_clip, tiny_clip_model_cfg
    from gpua_mmseg.models.vfm import build_vfm_encoder
    from gpua_mmseg.weights import WeightsNotFoundError
    from mmseg.registry import MODELS
    cache = tmp_path / 'cache'
    cache.mkdir()
    monkeypatch.setenv('GPUA_MMSEG_CACHE', str(cache))
    monkeypatch.setenv('HF_HOME', str(tmp_path / 'hf'))
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    clip_cfg = dict(name='tiny', pretrained='openai', model_cfg=tiny_clip_model_cfg())
    model_cfg = dict(type='GPUASegmentor', clip=clip_cfg, clip_mode='sclip',
                     class_names='cat; background', templates=['a {}.'], slide_crop=64,
                     slide_stride=32)
    with pytest.raises(WeightsNotFoundError, match='tiny-openai.safetensors'):
        MODELS.build(model_cfg)
    torch.manual_seed(3)
    src, _ = create_open_clip('tiny', None, model_cfg=tiny_clip_model_cfg())
    torch.save(src.state_dict(), cache / 'tiny-openai.pt')
    seg = MODELS.build(model_cfg)
    torch.testing.assert_close(seg.clip_encoder.model.visual.proj, src.visual.proj)
    assert seg.clip_encoder.info['pretrained'] == str(cache / 'tiny-openai.pt')

    vfm_cfg = dict(name=VFM_NAME, pretrained=True, model_kwargs=VFM_TINY)
    with pytest.raises(WeightsNotFoundError, match=VFM_NAME):
        build_vfm_encoder(vfm_cfg)
    ref = build_vfm_encoder(dict(vfm_cfg, pretrained=False))
    torch.save(ref.model.state_dict(), cache / f'{VFM_NAME}.pth')
    vfm = build_vfm_encoder(vfm_cfg)
    assert vfm.checkpoint == str(cache / f'{VFM_NAME}.pth')
    torch.testing.assert_close(vfm.model.patch_embed.proj.weight, ref.model.patch_embed.proj.weight)


# ---------------------------------------------------------------------------- design
def test_atomic_write_respects_umask_and_leaves_nothing_on_failure(tmp_path):
    from gpua_mmseg.apis import atomic_save
    from gpua_mmseg.utils.atomic import atomic_write, atomic_write_text
    old = os.umask(0o022)
    try:
        atomic_write_text(str(tmp_path / 'a.txt'), 'x')
        atomic_save(Image.new('RGB', (4, 4)), str(tmp_path / 'b.png'))
        AlignmentMap(torch.eye(3)).save(str(tmp_path / 'c.safetensors'))
        for name in ('a.txt', 'b.png', 'c.safetensors'):
            assert oct(os.stat(tmp_path / name).st_mode & 0o777) == '0o644', name
        os.umask(0o077)
        atomic_write_text(str(tmp_path / 'd.txt'), 'x')
        assert os.stat(tmp_path / 'd.txt').st_mode & 0o777 == 0o600
    finally:
        os.umask(old)

    def boom(tmp):
        open(tmp, 'w').write('half')
        raise OSError('disk full')
    with pytest.raises(OSError, match='disk full'):
        atomic_write(str(tmp_path / 'a.txt'), boom)
    assert open(tmp_path / 'a.txt').read() == 'x'
    # a temp file of a killed writer (its pid is gone) is removed by the next write there
    dead = tmp_path / '.e.png.999999999.abc123.tmp'
    dead.write_text('left by kill -9')
    atomic_write_text(str(tmp_path / 'e.txt'), 'y')
    assert sorted(os.listdir(tmp_path)) == ['a.txt', 'b.png', 'c.safetensors', 'd.txt', 'e.txt']


def test_templates_come_from_open_clip():
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES as OC
    from gpua_mmseg.models.templates import resolve_templates
    assert resolve_templates('openai_imagenet') == [t('{}') for t in OC]


def test_issue11_corrupt_cached_demo_map_is_refitted_and_empty_classes_refused(
        demo, gpua_setup, tmp_path, capsys):
    cfg, imgs, cache, _ = gpua_setup
    art = _fit_random(demo, gpua_setup, tmp_path / 'o1', 'cat; background')
    with open(art, 'r+b') as f:  # truncated by a crash / full disk
        f.truncate(100)
    capsys.readouterr()
    assert demo.main(_demo_args(cfg, imgs, tmp_path / 'o2', 'cat; background', '--weights',
                                'random', '--fit')) == 0
    captured = capsys.readouterr()
    assert 'ignoring the cached GPUA artifact' in captured.err
    assert 'fitting a GPUA map' in captured.out
    AlignmentMap.load(art)  # rewritten whole
    assert demo.main(_demo_args(cfg, imgs, tmp_path / 'o3', '', '--weights', 'random')) == 2
    assert 'empty' in capsys.readouterr().err
