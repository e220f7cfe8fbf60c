"""Issue 11 item 5: invalid ``--fit-options`` are reported before any model is built or feature
extracted -- tools/demo.py --fit and tools/fit_alignment.py."""


def test_demo_bad_fit_options_before_extraction(demo_runs):
    for name, key in (('bad fit options', 'refine_steps'), ('unknown fit options',
                                                           'refine_stepz')):
        r = demo_runs[name]
        assert r.rc == 2 and 'Traceback' not in r.err, (name, r.err)
        errors = [ln for ln in r.err.splitlines() if ln.startswith('ERROR: ')]
        assert len(errors) == 1 and key in errors[0] and '--fit-options' in errors[0], r.err
        assert 'model ready' not in r.out and 'fitting a GPUA map' not in r.out
        assert not r.cache.exists()  # no artifact, no text cache: nothing was built
        assert not r.outdir.exists()


def test_fit_tool_bad_fit_options_before_extraction(fit_runs):
    r = fit_runs.runs['bad options']
    assert r.rc == 2 and 'Traceback' not in r.err, r.err
    assert 'refine_steps' in r.err and '-1' in r.err
    assert not (fit_runs.root / 'opts').exists()  # no feature cache, no artifact


def test_fit_infinite_learning_rate_refused_first(tmp_path):
    """Item 6's validation on the fit path (run_fit, what the CLI calls): refine_lr=inf is named
    before the (here missing) dataset is even looked at."""
    import pytest
    from mmengine.config import Config

    from gpua_mmseg.fitting import FitOptions, run_fit
    from _hostile import GPUA_CONFIG, ROOT
    cfg = Config.fromfile(f'{ROOT}/{GPUA_CONFIG}')
    cfg.merge_from_dict({'test_dataloader.dataset.data_root': str(tmp_path / 'missing')})
    for bad in (dict(refine_lr=float('inf')), dict(refine_steps=-3)):
        opts = FitOptions(fit_cfg=bad, out=str(tmp_path / 'a.safetensors'), progress=False)
        with pytest.raises(ValueError, match=next(iter(bad))):
            run_fit(cfg, opts)
    assert list(tmp_path.iterdir()) == []
