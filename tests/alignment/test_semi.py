"""Issue 9 on the hard synthetic generator (correlated prototypes, sub-clusters, modality gap,
CLIP confusions, 40 classes): an adaptive GPUA prior that holds on every class balance, and a
SOTAlign that beats both its teacher and GPUA, never falling below its teacher.

Sizes follow the issue (K = 40, N = 20k unpaired, 60 labelled pairs) with dv = dc = 64 and few
refinement steps so the module stays fast; the fits are shared through module fixtures.
"""
import math

import pytest
import torch

from gpua_mmseg.alignment import GPUAConfig, SOTAlignConfig, fit_gpua, fit_sotalign, klot
from gpua_mmseg.alignment._checks import l2n
from gpua_mmseg.alignment.synthetic import accuracy, make_hard_problem, semi_split

PRIORS = ('uniform', 'clip', 'unbalanced', 'adaptive')
N_UNPAIRED, N_PAIRS, N_TEST = 20000, 60, 5000


@pytest.fixture(scope='module')
def data():
    out = {}
    for bal in ('balanced', 'zipf1.1', 'zipf1.6'):
        p = make_hard_problem(bal, seed=0)
        out[bal] = (p, semi_split(p, N_PAIRS, N_UNPAIRED, N_TEST))
    return out


def _map_acc(amap, s, T):
    return accuracy(amap.logits(s.test_vfm, T), s.test_labels)


@pytest.fixture(scope='module')
def prior_fits(data):
    """(accuracy, mean per-class accuracy, prior used) of the GPUA map per balance and prior."""
    res = {}
    for bal, (p, s) in data.items():
        for prior in PRIORS:
            amap = fit_gpua(s.unpaired_vfm, s.unpaired_clip, p.prototypes,
                            GPUAConfig(class_prior=prior, refine_steps=10), seed=0)
            res[bal, prior] = _map_acc(amap, s, p.prototypes) + (
                torch.tensor(amap.meta['class_prior_used']),)
    return res


@pytest.mark.parametrize('bal', ['balanced', 'zipf1.1', 'zipf1.6'])
def test_adaptive_prior_within_reach_of_best_fixed_prior(prior_fits, bal):
    acc, mpc, _ = prior_fits[bal, 'adaptive']
    best_acc = max(prior_fits[bal, p][0] for p in PRIORS[:3])
    best_mpc = max(prior_fits[bal, p][1] for p in PRIORS[:3])
    assert acc >= best_acc - 0.02, (bal, acc, best_acc)
    assert mpc >= best_mpc - 0.03, (bal, mpc, best_mpc)


def test_no_fixed_prior_wins_everywhere(prior_fits):
    # the failures of issue 9, reproduced: clip loses on balanced classes, uniform collapses
    # on Zipf classes -- this is what makes the generator a test of the adaptive prior
    assert prior_fits['balanced', 'clip'][0] < prior_fits['balanced', 'uniform'][0] - 0.03
    for bal in ('zipf1.1', 'zipf1.6'):
        assert prior_fits[bal, 'uniform'][0] < prior_fits[bal, 'adaptive'][0] - 0.1


def test_every_prior_option_changes_the_plan(prior_fits, data):
    for bal in data:
        used = {p: prior_fits[bal, p][2] for p in PRIORS}
        accs = {p: prior_fits[bal, p][0] for p in PRIORS}
        # the marginal actually handed to Sinkhorn differs between options
        assert float((used['clip'] - used['uniform']).abs().sum()) > 0.3
        assert float((used['adaptive'] - used['uniform']).abs().sum()) > (
            0.3 if bal != 'balanced' else 0.0)
        # and the result moves with it (unbalanced: same b as uniform, relaxed columns)
        assert len({round(a, 4) for a in accs.values()}) == len(PRIORS), (bal, accs)


@pytest.mark.parametrize('bal', ['balanced', 'zipf1.1', 'zipf1.6'])
def test_adaptive_marginal_estimates_true_frequencies(prior_fits, data, bal):
    p, _ = data[bal]
    l1 = lambda b: float((b - p.class_probs).abs().sum())  # noqa: E731
    adaptive, clip, uniform = (l1(prior_fits[bal, k][2]) for k in ('adaptive', 'clip', 'uniform'))
    assert clip > 0.5                                    # CLIP's histogram is gap-biased
    if bal == 'zipf1.6':
        # half the mass in one class: the estimate moves most of the way, not all of it
        assert adaptive < min(clip, uniform) - 0.3
    else:
        assert adaptive < 0.25


def test_adaptive_keeps_its_estimate_on_the_hard_problems(data):
    """The prior check must not undo the EM estimate where it is right (the K = 40 problems)."""
    for bal, (p, s) in data.items():
        amap = fit_gpua(s.unpaired_vfm, s.unpaired_clip, p.prototypes,
                        GPUAConfig(refine_steps=0), seed=0)
        check = amap.meta['prior_check']
        assert check['chosen'] == 'adaptive', (bal, check)


@pytest.mark.parametrize('kw', [
    dict(balance=2.0, gap=0.0, sigma_v=2.0, sub_spread=1.5),
    dict(balance=1.6, gap=0.3, sigma_v=3.0, sub_spread=1.0)])
def test_prior_check_rescues_a_vfm_whose_clusters_mislead_the_em(kw):
    """Few classes, two of them dominant, multi-modal in a noisy VFM (the toy world's case):
    the EM marginal follows VFM sub-clusters instead of classes while CLIP's histogram is
    nearly right.  The check must notice (the map cannot reproduce the EM plan better than
    CLIP's) and switch to the CLIP marginal: >= 10 points of accuracy back."""
    p = make_hard_problem(k=8, n_groups=2, confused=0.0, seed=0, **kw)
    s = semi_split(p, 0, 10000, 5000)
    T = p.prototypes
    fits = {name: fit_gpua(s.unpaired_vfm, s.unpaired_clip, T, GPUAConfig(refine_steps=0, **c),
                           seed=0)
            for name, c in (('nocheck', dict(prior_check=False)), ('check', {}),
                            ('clip', dict(class_prior='clip')))}
    acc = {k: _map_acc(m, s, T)[0] for k, m in fits.items()}
    assert fits['check'].meta['prior_check']['chosen'] == 'clip', fits['check'].meta
    assert acc['check'] >= acc['nocheck'] + 0.10, acc
    assert acc['check'] == pytest.approx(acc['clip'], abs=0.01), acc


@pytest.fixture(scope='module')
def semi_fits(data):
    res = {}
    for bal in ('balanced', 'zipf1.1'):
        p, s = data[bal]
        T = p.prototypes
        teacher = fit_sotalign(s.pair_vfm, s.pair_labels, s.unpaired_vfm, T,
                               SOTAlignConfig(otp_iters=0, select='none', pool_size=4096))
        gpua = fit_gpua(s.unpaired_vfm, s.unpaired_clip, T, GPUAConfig(refine_steps=10))
        semi = fit_sotalign(s.pair_vfm, s.pair_labels, s.unpaired_vfm, T, SOTAlignConfig(),
                            seed=0, unpaired_clip=s.unpaired_clip)
        res[bal] = dict(teacher=_map_acc(teacher, s, T)[0], gpua=_map_acc(gpua, s, T)[0],
                        semi=_map_acc(semi, s, T)[0], semi_map=semi)
    return res


@pytest.mark.parametrize('bal', ['balanced', 'zipf1.1'])
def test_sotalign_with_clip_beats_teacher_and_gpua(semi_fits, bal):
    r = semi_fits[bal]
    assert r['semi'] >= max(r['teacher'], r['gpua']) + 0.02, r
    amap = r['semi_map']
    assert amap.meta['used_clip'] and amap.orthogonality_error() < 1e-5
    assert set(amap.meta['cv_accuracy']) == {'semi', 'gpua', 'teacher'}


def test_sotalign_without_clip_never_below_its_teacher(data):
    p, s = data['zipf1.1']
    T = p.prototypes
    U = s.unpaired_vfm[:6000]
    kw = dict(pool_size=2048, otp_iters=3)
    teacher = _map_acc(fit_sotalign(s.pair_vfm, s.pair_labels, U, T,
                                    SOTAlignConfig(**dict(kw, otp_iters=0), select='none')),
                       s, T)[0]
    # issue-9 behaviour (flat marginal, per-pixel pairs, no safeguard) collapses below it
    old = _map_acc(fit_sotalign(s.pair_vfm, s.pair_labels, U, T,
                                SOTAlignConfig(class_prior='uniform', select='none', **kw)),
                   s, T)[0]
    new_map = fit_sotalign(s.pair_vfm, s.pair_labels, U, T, SOTAlignConfig(**kw))
    new = _map_acc(new_map, s, T)[0]
    assert old < teacher - 0.02
    assert new >= teacher - 0.005
    assert not new_map.meta['used_clip']


def _small():
    p = make_hard_problem('zipf1.1', k=12, dv=16, dc=16, n_groups=4, seed=1)
    return p, semi_split(p, 30, 3000, 10)


def test_sotalign_clip_stream_equals_tensors_and_is_deterministic():
    p, s = _small()
    cfg = SOTAlignConfig(chunk_size=700)
    a = fit_sotalign(s.pair_vfm, s.pair_labels, s.unpaired_vfm, p.prototypes, cfg, seed=2,
                     unpaired_clip=s.unpaired_clip)

    def source():
        for i in range(0, s.unpaired_vfm.shape[0], 700):
            yield s.unpaired_vfm[i:i + 700], s.unpaired_clip[i:i + 700]
    b = fit_sotalign(s.pair_vfm, s.pair_labels, source, p.prototypes, cfg, seed=2)
    c = fit_sotalign(s.pair_vfm, s.pair_labels, source, p.prototypes, cfg, seed=2)
    assert b.meta['used_clip'] and b.meta['n_samples'] == 3000
    assert torch.allclose(a.W, b.W, atol=1e-5)
    assert torch.equal(b.W, c.W)


def test_sotalign_pool_bounds_memory():
    p, s = _small()
    amap = fit_sotalign(s.pair_vfm, s.pair_labels, s.unpaired_vfm, p.prototypes,
                        SOTAlignConfig(pool_size=500, em_rows=300), unpaired_clip=s.unpaired_clip)
    assert amap.meta['n_samples'] == 3000 and amap.orthogonality_error() < 1e-5


@pytest.mark.parametrize('case,match', [
    ('clip_n', 'unpaired_clip has 2999 rows'), ('clip_dc', 'unpaired_clip has feature dim'),
    ('clip_nan', 'unpaired_clip contains NaN'), ('label_range', 'pair_labels must lie in'),
    ('source_and_clip', 'unpaired_clip must be None'), ('stream_nan', 'unpaired_clip chunk'),
    ('pair_nan', 'pair_vfm contains NaN')])
def test_sotalign_bad_inputs_name_the_argument(case, match):
    p, s = _small()
    pv, pl, uv, uc = s.pair_vfm, s.pair_labels, s.unpaired_vfm, s.unpaired_clip
    if case == 'clip_n':
        uc = uc[:-1]
    elif case == 'clip_dc':
        uc = uc[:, :5]
    elif case == 'clip_nan':
        uc = uc.clone()
        uc[7, 2] = float('nan')
    elif case == 'label_range':
        pl = pl.clone()
        pl[0] = 12
    elif case == 'pair_nan':
        pv = pv.clone()
        pv[0, 0] = float('inf')
    if case == 'source_and_clip':
        uv = lambda: iter([(s.unpaired_vfm, s.unpaired_clip)])  # noqa: E731
    elif case == 'stream_nan':
        bad = uc.clone()
        bad[5] = float('nan')
        uv, uc = (lambda: iter([(s.unpaired_vfm, bad)])), None
    with pytest.raises(ValueError, match=match):
        fit_sotalign(pv, pl, uv, p.prototypes, SOTAlignConfig(), unpaired_clip=uc)


@pytest.mark.parametrize('cls,field,value', [
    (GPUAConfig, 'refine_lr', math.inf), (GPUAConfig, 'refine_lr', -1e-3),
    (GPUAConfig, 'refine_steps', -1), (GPUAConfig, 'eps', 0.0),
    (GPUAConfig, 'tau', math.nan), (GPUAConfig, 'outer_iters', 0),
    (GPUAConfig, 'prior_floor', 2.0), (GPUAConfig, 'sinkhorn_rows', 2.5),
    (SOTAlignConfig, 'lr', math.nan), (SOTAlignConfig, 'lr', 0.0),
    (SOTAlignConfig, 'steps', -5), (SOTAlignConfig, 'cv_folds', 1),
    (SOTAlignConfig, 'anchor_weight', -1.0), (SOTAlignConfig, 'eps_teacher', math.inf),
    (SOTAlignConfig, 'teacher_sinkhorn_iters', 0), (SOTAlignConfig, 'batch_size', 0)])
def test_config_rejects_bad_numbers_naming_the_field(cls, field, value):
    with pytest.raises(ValueError, match=rf'{cls.__name__}\.{field} must'):
        cls(**{field: value}).validate()


def test_sotalign_gpua_overrides_are_checked():
    with pytest.raises(ValueError, match='unknown GPUAConfig fields'):
        SOTAlignConfig(gpua=dict(bogus=1)).validate()
    with pytest.raises(ValueError, match='GPUAConfig.refine_lr'):
        SOTAlignConfig(gpua=dict(refine_lr=math.inf)).validate()


def test_klot_teacher_plan_converges_with_its_own_budget():
    g = torch.Generator().manual_seed(0)
    X = l2n(torch.randn(2048, 32, generator=g))
    T = l2n(torch.randn(40, 32, generator=g))
    K = X @ T.T
    short, full = {}, {}
    klot(K, K.roll(1, 0), eps=0.05, eps_star=0.01, n_iters=100, tol=1e-6, stats=short)
    klot(K, K.roll(1, 0), eps=0.05, eps_star=0.01, n_iters=100, tol=1e-6, n_iters_star=3000,
         stats=full)
    assert full['teacher_marginal_err'] < 1e-3
    assert full['teacher_marginal_err'] < short['teacher_marginal_err']


def test_sotalign_klot_reports_marginal_errors():
    p, s = _small()
    amap = fit_sotalign(s.pair_vfm, s.pair_labels, s.unpaired_vfm, p.prototypes,
                        SOTAlignConfig(refine='klot', steps=4, batch_size=256, select='none'))
    hist = amap.meta['history']
    assert hist and all(h['teacher_marginal_err'] < 1e-2 for h in hist)
    assert all(math.isfinite(h['student_marginal_err']) for h in hist)


def test_sotalign_gpua_candidate_is_gpuas_own_map(monkeypatch):
    """The safeguard's label-free candidate is the map fit_gpua returns (Procrustes over the
    stream and the hubness refinement) with GPUA's default settings, not a cruder one-shot
    Procrustes on the pool without refinement: with that one, SOTAlign with 10 labelled toy
    scenes ended 1.8 mIoU below GPUA without labels (45.7 vs 47.5, GPUA only)."""
    from gpua_mmseg.alignment import sotalign as S
    p, s = _small()
    cfg = SOTAlignConfig()
    gpua = fit_gpua(s.unpaired_vfm, s.unpaired_clip, p.prototypes, GPUAConfig(), seed=2)
    monkeypatch.setattr(S, '_select', lambda cands, *a, **k: ('gpua', {}))
    semi = fit_sotalign(s.pair_vfm, s.pair_labels, s.unpaired_vfm, p.prototypes, cfg, seed=2,
                        unpaired_clip=s.unpaired_clip)
    assert semi.meta['selected'] == 'gpua'
    assert torch.allclose(semi.W, gpua.W, atol=1e-6)
