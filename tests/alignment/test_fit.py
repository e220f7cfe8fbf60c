"""GPUA / SOTAlign fits on synthetic problems with a known ground-truth rotation."""
import json
import math
import subprocess
import sys

import pytest
import torch

from gpua_mmseg.alignment import (AlignmentMap, GPUAConfig, SOTAlignConfig, fit_gpua,
                                  fit_sotalign, procrustes, vocabulary_hash)
from gpua_mmseg.alignment._checks import l2n
from gpua_mmseg.alignment.synthetic import make_problem


@pytest.fixture(scope='module')
def problem():
    # K > dc so the rotation is identifiable; Zipf-imbalanced classes; noisy, shifted CLIP side
    p = make_problem(dv=32, dc=32, k=48, sigma_v=0.5, sigma_c=1.2, gap=0.5, seed=0)
    v, c, y = p.sample(8000)
    return p, v, c, y


@pytest.fixture(scope='module')
def gpua_fit(problem):
    p, v, c, y = problem
    return fit_gpua(v, c, p.prototypes, GPUAConfig(refine_steps=60), seed=0,
                    return_correspondence=True)


def _acc(logits, y):
    return float((logits.argmax(-1) == y).float().mean())


def test_gpua_recovers_rotation_and_improves_fusion(problem, gpua_fit):
    p, v, c, y = problem
    amap, corr = gpua_fit
    T = p.prototypes
    random_err = p.recovery_error(torch.linalg.qr(torch.randn(32, 32))[0])
    assert random_err > 1.2                        # a random rotation scores ~sqrt(2)
    assert p.recovery_error(amap.W) < 0.3
    assert amap.orthogonality_error() < 1e-5
    pseudo = _acc(corr.plan(c, v), y)
    clip_only = _acc(l2n(c) @ T.T, y)
    fused = _acc(0.9 * (l2n(c) @ T.T) + 0.1 * amap.logits(v, T), y)
    assert pseudo > 0.9
    assert fused > clip_only
    assert clip_only < 0.95                        # the CLIP side alone is not enough


def test_clip_prior_beats_uniform_on_imbalanced_classes(problem, gpua_fit):
    p, v, c, y = problem
    _, corr_clip = fit_gpua(v, c, p.prototypes, GPUAConfig(class_prior='clip', refine_steps=0),
                            seed=0, return_correspondence=True)
    _, corr_uni = fit_gpua(v, c, p.prototypes, GPUAConfig(class_prior='uniform', refine_steps=0),
                           seed=0, return_correspondence=True)
    assert _acc(corr_clip.plan(c, v), y) > _acc(corr_uni.plan(c, v), y) + 0.05


def test_unbalanced_prior_runs(problem):
    p, v, c, y = problem
    amap = fit_gpua(v[:3000], c[:3000], p.prototypes,
                    GPUAConfig(class_prior='unbalanced', refine_steps=5), seed=0)
    assert amap.orthogonality_error() < 1e-5


def test_streaming_source_equals_in_memory(problem):
    p, v, c, y = problem
    cfg = GPUAConfig(refine_steps=10, chunk_size=1000)
    a = fit_gpua(v, c, p.prototypes, cfg, seed=3)

    def source():
        for s in range(0, v.shape[0], 1000):
            yield v[s:s + 1000], c[s:s + 1000]
    b = fit_gpua(source, None, p.prototypes, cfg, seed=3)
    assert torch.allclose(a.W, b.W, atol=1e-5)
    assert b.meta['n_samples'] == v.shape[0]


def test_determinism(problem):
    p, v, c, y = problem
    cfg = GPUAConfig(refine_steps=20)
    a = fit_gpua(v[:4000], c[:4000], p.prototypes, cfg, seed=5)
    b = fit_gpua(v[:4000], c[:4000], p.prototypes, cfg, seed=5)
    assert torch.equal(a.W, b.W)


def test_wide_map_when_vfm_smaller_than_clip():
    p = make_problem(dv=16, dc=24, k=30, seed=2)
    v, c, y = p.sample(4000)
    amap = fit_gpua(v, c, p.prototypes, GPUAConfig(refine_steps=20), seed=0)
    assert amap.W.shape == (16, 24)
    assert amap.orthogonality_error() < 1e-5      # W W^T = I
    assert _acc(amap.logits(v, p.prototypes), y) > 0.8


def test_save_load_round_trip(tmp_path, gpua_fit, problem):
    p, v, c, y = problem
    amap, _ = gpua_fit
    amap.meta['vocabulary'] = [f'class{i}' for i in range(48)]
    amap.meta['vocab_hash'] = vocabulary_hash(amap.meta['vocabulary'])
    path = tmp_path / 'sub' / 'map.safetensors'
    amap.save(str(path))
    assert [f.name for f in path.parent.iterdir()] == ['map.safetensors']   # no temp leftovers
    back = AlignmentMap.load(str(path))
    assert torch.equal(back.W, amap.W)
    assert torch.equal(back.csls_r, amap.csls_r)
    assert back.meta['method'] == 'gpua' and back.meta['config']['tau'] == 0.1
    for key in ('orthogonality_error', 'timings_s', 'package_version', 'n_samples', 'seed'):
        assert key in back.meta
    assert torch.allclose(back.logits(v[:10], p.prototypes), amap.logits(v[:10], p.prototypes))
    back.validate(dv=32, dc=32, vocabulary=amap.meta['vocabulary'])
    with pytest.raises(ValueError, match='vocab'):
        back.validate(vocabulary=['other'] * 48)
    with pytest.raises(ValueError, match=r'VFM dim|dv'):
        back.validate(dv=768)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        AlignmentMap.load(str(tmp_path / 'missing.safetensors'))
    bad = tmp_path / 'bad.safetensors'
    bad.write_bytes(b'not a safetensors file')
    with pytest.raises(ValueError, match='not a readable'):
        AlignmentMap.load(str(bad))


def test_failed_save_leaves_nothing(tmp_path):
    amap = AlignmentMap(torch.eye(4), {'unserialisable': object()})
    with pytest.raises(TypeError):
        amap.save(str(tmp_path / 'x.safetensors'))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize('case,match', [
    ('dim', 'dimension'), ('k0', 'K = 0'), ('nan', 'NaN'), ('n_lt_k', 'N >= K'),
    ('dtype', 'floating-point'), ('rows', 'same number of rows')])
def test_bad_inputs(case, match):
    p = make_problem(dv=8, dc=8, k=10, seed=0)
    v, c, y = p.sample(200)
    T = p.prototypes
    if case == 'dim':
        args = (v, c[:, :5], T)
    elif case == 'k0':
        args = (v, c, T[:0])
    elif case == 'nan':
        v = v.clone()
        v[3, 1] = float('nan')
        args = (v, c, T)
    elif case == 'n_lt_k':
        args = (v[:5], c[:5], T)
    elif case == 'dtype':
        args = (v.long(), c, T)
    else:
        args = (v[:100], c, T)
    with pytest.raises(ValueError, match=match):
        fit_gpua(*args, GPUAConfig(refine_steps=1))


def test_bad_config():
    with pytest.raises(ValueError, match='class_prior'):
        GPUAConfig(class_prior='zipf').validate()
    with pytest.raises(ValueError, match='refine'):
        SOTAlignConfig(refine='sgd').validate()


@pytest.fixture(scope='module')
def few_pairs():
    # balanced classes; the unpaired data are the same kind of patches with hidden labels
    p = make_problem(dv=32, dc=32, k=64, sigma_v=0.5, zipf=0.0, seed=1)
    v, c, y = p.sample(8000)
    return p, v, c, y


def test_sotalign_few_pairs_reaches_oracle(few_pairs):
    p, v, c, y = few_pairs
    T = p.prototypes
    n = 16                                               # < d: Procrustes is under-determined
    oracle = p.recovery_error(procrustes(l2n(v), T[y]))
    kw = dict(class_prior='uniform', select='none', otp_iters=8)
    teacher = fit_sotalign(v[:n], y[:n], v, T, SOTAlignConfig(otp_iters=0, select='none'))
    refined = fit_sotalign(v[:n], y[:n], v, T, SOTAlignConfig(**kw), seed=0)
    semi = fit_sotalign(v[:n], y[:n], v, T, SOTAlignConfig(), seed=0, unpaired_clip=c)
    # "unsupervised": the same OT refinement started from a random orthogonal map (no pairs)
    from gpua_mmseg.alignment.sotalign import _refine_ot_procrustes
    W_rand = torch.linalg.qr(torch.randn(32, 32, generator=torch.Generator().manual_seed(0)))[0]
    W_unsup, _ = _refine_ot_procrustes(W_rand, l2n(v[:0]), y[:0], l2n(v), T, None,
                                       SOTAlignConfig(otp_iters=8, class_prior='uniform'))
    e_teacher, e_ref, e_semi, e_unsup = (p.recovery_error(teacher.W), p.recovery_error(refined.W),
                                         p.recovery_error(semi.W), p.recovery_error(W_unsup))
    assert e_teacher > 0.9                               # under-determined teacher
    assert e_ref < e_teacher - 0.3                       # unpaired VFM rows alone help ...
    assert e_semi < oracle + 0.05                        # ... with their CLIP rows: the oracle
    assert e_semi < e_teacher and e_semi < e_unsup
    assert semi.orthogonality_error() < 1e-5


@pytest.mark.parametrize('teacher', ['procrustes', 'cca'])
def test_sotalign_klot_runs_and_stays_orthogonal(few_pairs, teacher):
    p, v, c, y = few_pairs
    cfg = SOTAlignConfig(refine='klot', teacher=teacher, steps=15, batch_size=512,
                         optimizer='lion' if teacher == 'cca' else 'adamw', select='none',
                         teacher_sinkhorn_iters=300)
    amap = fit_sotalign(v[:40], y[:40], v[:2000], p.prototypes, cfg, seed=0)
    assert amap.orthogonality_error() < 1e-5
    hist = amap.meta['history']
    assert all(math.isfinite(h['klot']) and h['klot'] >= -1e-6 for h in hist)


def test_alignment_import_pulls_in_no_openmmlab():
    code = ('import sys, gpua_mmseg.alignment; '
            'bad = [m for m in sys.modules if m.split(".")[0] in ("mmseg", "mmengine", "mmcv")]; '
            'print(bad); sys.exit(1 if bad else 0)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
