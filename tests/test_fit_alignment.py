"""gpua_mmseg.fitting + tools/fit_alignment.py: patch labels, feature cache, resume after an
interruption (bit-identical artifact), rank sharding, SOTAlign pairs, bad input.  Tiny random CLIP
and timm ViT on a toy VOC dataset; no network."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest

from gpua_mmseg.vocabulary import Vocabulary
import torch

import gpua_mmseg.models  # noqa: F401  (mmcv-lite placeholder before mmseg)
from gpua_mmseg.alignment import AlignmentMap
from gpua_mmseg.fitting import (FeatureCache, FitInterrupted, FitOptions, patch_majority_labels,
                                run_fit)
from gpua_mmseg.models.clip import tiny_clip_model_cfg

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SCLIP_CFG = osp.join(ROOT, 'configs/gpua/gpua_sclip_dinov3_vitb16_voc21.py')
# timings differ between runs; everything else must not
VOLATILE = ('timings_s', 'extract_seconds', 'wall_seconds')


def tiny_options(data_root):
    clip = dict(name='tiny', pretrained=None, model_cfg=tiny_clip_model_cfg(
        width=32, layers=3, heads=2, embed_dim=16, text_width=32, text_layers=1, text_heads=2,
        context_length=16))
    return {'model.clip': clip, 'model.vfm.pretrained': False,
            'model.vfm.model_kwargs': dict(embed_dim=24, depth=1, num_heads=2, img_size=64),
            'test_dataloader.dataset.data_root': str(data_root),
            'test_dataloader.dataset.pipeline.1.scale': (2048, 64), 'model.templates': ['{}'],
            'model.slide_crop': 64, 'model.slide_stride': 32}


def load_cfg(data_root, path=SCLIP_CFG):
    from mmengine.config import Config
    cfg = Config.fromfile(path)
    cfg.merge_from_dict(tiny_options(data_root))
    return cfg


@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    out = tmp_path_factory.mktemp('fit') / 'toy'
    r = subprocess.run([sys.executable, osp.join(ROOT, 'tools/make_toy_dataset.py'), str(out),
                        '--n', '4', '--size', '64', '96'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return out


def fast_fit(**kw):
    return FitOptions(fit_cfg=dict(refine_steps=5, outer_iters=2), progress=False, plot=False,
                      **kw)


def same_artifacts(a, b):
    A, B = AlignmentMap.load(a), AlignmentMap.load(b)
    assert torch.equal(A.W, B.W)
    assert (A.csls_r is None and B.csls_r is None) or torch.equal(A.csls_r, B.csls_r)
    strip = lambda m: {k: v for k, v in m.items() if k not in VOLATILE}  # noqa: E731
    assert strip(A.meta) == strip(B.meta)


def test_patch_majority_labels_matches_a_loop():
    g = torch.Generator().manual_seed(0)
    lab = torch.randint(0, 4, (8, 12), generator=g)
    lab[:4, :4] = 255                              # one cell entirely void
    lab[4:8, 0:4] = 7                              # out-of-vocabulary label = void too
    got = patch_majority_labels(lab, 4, num_classes=5)
    want = []
    for y in range(2):
        for x in range(3):
            cell = lab[4 * y:4 * y + 4, 4 * x:4 * x + 4].reshape(-1)
            cell = cell[cell < 5]
            want.append(-1 if cell.numel() == 0 else int(torch.bincount(cell, minlength=5).argmax()))
    assert got.tolist() == want and want[0] == -1 and want[3] == -1
    with pytest.raises(ValueError, match='multiple of the patch size'):
        patch_majority_labels(lab[:7], 4, 5)


def test_cache_chunks_cross_shards_and_key_separates_configs(tmp_path):
    cache = FeatureCache(str(tmp_path), dict(a=1), n_images=5, images_per_shard=2,
                         dtype='float32')
    assert cache.n_shards == 3 and list(cache.shard_images(2)) == [4]
    assert cache.shards_of_rank(1, 2) == [1] and cache.shards_of_rank(0, 2) == [0, 2]
    rows = []
    for s, n in enumerate((3, 4, 2)):
        c, v = torch.randn(n, 6), torch.randn(n, 10)
        cache.write_shard(s, c, v, torch.full((n,), s), torch.arange(n))
        rows.append((v, c))
    assert cache.is_complete()
    chunks = list(cache.chunk_source(rows_per_chunk=4)())
    assert [ch[0].shape[0] for ch in chunks] == [4, 4, 1]
    assert torch.equal(torch.cat([ch[0] for ch in chunks]), torch.cat([r[0] for r in rows]))
    assert torch.equal(torch.cat([ch[1] for ch in chunks]), torch.cat([r[1] for r in rows]))
    assert FeatureCache(str(tmp_path), dict(a=2), n_images=5).key != cache.key
    with open(cache.manifest_path) as f:
        assert json.load(f)['n_shards'] == 3
    with pytest.raises(ValueError, match='same R'):
        cache.write_shard(0, torch.zeros(2, 6), torch.zeros(3, 10), torch.zeros(2), torch.zeros(2))


def test_interrupted_fit_resumes_to_the_same_artifact(toy, tmp_path):
    cfg = load_cfg(toy)
    ref = str(tmp_path / 'ref.safetensors')
    assert run_fit(cfg, fast_fit(out=ref, cache_dir=str(tmp_path / 'c1'), seed=3)) == ref
    out = str(tmp_path / 'resumed.safetensors')
    cache2 = str(tmp_path / 'c2')
    with pytest.raises(FitInterrupted):
        run_fit(cfg, fast_fit(out=out, cache_dir=cache2, seed=3, stop_after_shards=2))
    assert not osp.exists(out)                     # no partial artifact
    (key,) = os.listdir(cache2)
    shards = sorted(f for f in os.listdir(osp.join(cache2, key)) if f.startswith('shard_'))
    assert len(shards) == 2 and not [f for f in os.listdir(osp.join(cache2, key))
                                     if f.endswith('.tmp')]
    mtimes = {f: os.stat(osp.join(cache2, key, f)).st_mtime_ns for f in shards}
    run_fit(cfg, fast_fit(out=out, cache_dir=cache2, seed=3))
    # the finished shards were reused, not recomputed
    assert {f: os.stat(osp.join(cache2, key, f)).st_mtime_ns for f in shards} == mtimes
    same_artifacts(ref, out)
    meta = AlignmentMap.load(out).meta
    voc = Vocabulary.parse(osp.join(ROOT, 'gpua_mmseg/datasets/class_names/voc21.txt'))
    assert meta['vocabulary'] == voc.classes and meta['vocab_hash'] == voc.hash
    assert meta['identity']['vocab_hash'] == voc.hash and meta['identity']['method'] == 'gpua'
    assert meta['vfm'] == 'vit_base_patch16_dinov3.lvd1689m'
    assert meta['vlm'] == 'tiny' and meta['n_images'] == 4 and meta['method'] == 'gpua'
    # 4 images of 64x96 -> 2 windows of 64x64 -> 2 * 16 patches each
    assert meta['n_samples'] == 4 * 2 * 16
    assert AlignmentMap.load(out).orthogonality_error() < 1e-5
    # a different seed gives another map (the comparison above can fail)
    other = str(tmp_path / 'seed4.safetensors')
    run_fit(cfg, fast_fit(out=other, cache_dir=str(tmp_path / 'c3'), seed=4, max_images=2))
    assert not torch.equal(AlignmentMap.load(other).W, AlignmentMap.load(ref).W)


def test_ranks_fill_disjoint_shards_then_rank0_fits(toy, tmp_path):
    """world_size=2 run one rank after the other (no process group: barriers are no-ops)."""
    cfg = load_cfg(toy)
    single = str(tmp_path / 'single.safetensors')
    run_fit(cfg, fast_fit(out=single, cache_dir=str(tmp_path / 'a'), max_images=3))
    two = str(tmp_path / 'two.safetensors')
    kw = dict(out=two, cache_dir=str(tmp_path / 'b'), max_images=3, world_size=2)
    assert run_fit(cfg, fast_fit(rank=1, **kw)) is None and not osp.exists(two)
    (key,) = os.listdir(tmp_path / 'b')
    assert sorted(f for f in os.listdir(tmp_path / 'b' / key) if f.startswith('shard_')) == [
        'shard_000001.safetensors']               # rank 1 of 2: every other shard from 1
    assert run_fit(cfg, fast_fit(rank=0, **kw)) == two
    same_artifacts(single, two)


def test_sotalign_pairs_from_labelled_images(toy, tmp_path):
    cfg = load_cfg(toy)
    out = str(tmp_path / 'sot.safetensors')
    # the toy dataset has only the evaluated split: labels from it need the explicit opt-in
    opts = FitOptions(method='sotalign', labeled=2, out=out, cache_dir=str(tmp_path / 'c'),
                      fit_cfg=dict(steps=5, otp_iters=2, teacher='procrustes'), progress=False,
                      labeled_split='test', allow_test_labels=True)
    run_fit(cfg, opts)
    amap = AlignmentMap.load(out)
    assert amap.meta['method'] == 'sotalign' and amap.meta['n_labeled_images'] == 2
    # pairs: labelled patches of the first 2 images only (toy masks have void borders)
    assert 0 < amap.meta['n_pairs'] <= 2 * 2 * 16 and amap.meta['n_samples'] == 4 * 2 * 16
    assert amap.orthogonality_error() < 1e-5
    assert osp.isfile(str(tmp_path / 'sot_diagnostics.png'))
    assert set(amap.meta['diagnostics']) == {'before', 'after', 'agreement'}
    assert any('evaluated (test) split' in w for w in amap.meta.get('warnings', [])), amap.meta.get('warnings')


def test_bad_input_is_a_clear_error_without_artifact(toy, tmp_path):
    out = str(tmp_path / 'x.safetensors')
    with pytest.raises(FileNotFoundError, match='data_root'):
        run_fit(load_cfg(tmp_path / 'nowhere'), fast_fit(out=out))
    with pytest.raises(ValueError, match='--labeled'):
        run_fit(load_cfg(toy), fast_fit(out=out, method='sotalign'))
    with pytest.raises(ValueError, match='unknown GPUAConfig fields'):
        run_fit(load_cfg(toy), FitOptions(out=out, max_images=1, progress=False,
                                          cache_dir=str(tmp_path / 'c'), fit_cfg=dict(nope=1)))
    from mmengine.config import Config
    base = Config.fromfile(osp.join(ROOT, 'configs/sclip/sclip_vitb16_voc21.py'))
    base.merge_from_dict({k: v for k, v in tiny_options(toy).items() if 'vfm' not in k})
    with pytest.raises(ValueError, match='alignment_path'):
        run_fit(base, fast_fit())
    with pytest.raises(ValueError, match='model.vfm'):
        run_fit(base, fast_fit(out=out))
    empty = tmp_path / 'empty'
    (empty / 'ImageSets/Segmentation').mkdir(parents=True)
    (empty / 'ImageSets/Segmentation/val.txt').write_text('')
    with pytest.raises(ValueError, match='no images'):
        run_fit(load_cfg(empty), fast_fit(out=out))
    assert not osp.exists(out)
    r = subprocess.run([sys.executable, osp.join(ROOT, 'tools/fit_alignment.py'),
                        'configs/gpua/nope.py'], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and 'does not exist' in r.stderr and 'Traceback' not in r.stderr
