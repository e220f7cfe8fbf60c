"""tools/benchmark.py --side-by-side / --text (issue 13) on tiny random models: every row is
there, rows doing the same computation give the same scores, the short text forward gives the
full-context embeddings.  Speed itself is measured by the script, never asserted."""
import importlib.util
import os.path as osp

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


@pytest.fixture(scope='module')
def bench():
    spec = importlib.util.spec_from_file_location('gpua_benchmark',
                                                  osp.join(ROOT, 'tools/benchmark.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_side_by_side_rows(bench, capsys):
    args = bench.parse_args(['--side-by-side', '--tiny', '--n-images', '1', '--warmup', '0',
                             '--device', 'cpu'])
    rows = {r['row']: r for r in bench.side_by_side_main(args)}
    assert 'SCLIP, crop by crop (public reference style)' in rows
    assert rows['SCLIP, batched']['ratio'] == 1.0
    assert any(n.startswith('SCLIP + GPUA') for n in rows)
    assert {'ProxyCLIP', 'ProxyCLIP + GPUA'} <= set(rows)
    # crop by crop and batched are the same computation
    diff = float(rows['SCLIP, crop by crop (public reference style)']['diff'].split()[0])
    assert diff <= 1e-5
    out = capsys.readouterr().out
    assert '| row | img/s | s/img | time / its CLIP baseline | peak RSS' in out
    assert all(r['img_s'] > 0 and r['peak_mb'] >= 0 for r in rows.values())


def test_gpu_variant_rows(bench, capsys):
    """The GPU item's rows run (here on the CPU, where the overlap is a no-op and torch.compile
    uses inductor's C++ backend): overlap rows give exactly the scores of their plain rows,
    compiled rows those of the eager ones to float rounding, and each compiled GPUA row is
    divided by the compiled SCLIP row."""
    args = bench.parse_args(['--side-by-side', '--gpu-variants', '--compile-modes', 'default',
                             '--tiny', '--n-images', '1', '--warmup', '1', '--device', 'cpu'])
    rows = {r['row']: r for r in bench.side_by_side_main(args)}
    for window in ('crop', 'whole'):
        row = rows[f"SCLIP + GPUA, vfm_window='{window}', overlap_encoders"]
        assert row['diff'] == f"0.0e+00 vs SCLIP + GPUA, vfm_window='{window}'"
    compiled = [n for n in rows if 'compile default' in n]
    assert len(compiled) == 3 and not any('error' in rows[n] for n in compiled)
    for name in compiled:
        assert float(rows[name]['diff'].split()[0]) <= 1e-5
    assert rows["SCLIP + GPUA, vfm_window='whole', compile default"]['baseline'] == \
        'SCLIP, batched, compile default'
    assert '(vs SCLIP, batched, compile default)' in capsys.readouterr().out


def test_text_full_vs_short(bench, capsys):
    args = bench.parse_args(['--text', '--tiny', '--text-queries', '3', '--device', 'cpu'])
    res = bench.text_main(args)
    assert res['prompts'] == 3 * 80 and res['scale'] == 20.0  # voc21: 60 queries
    assert res['diff'] <= 1e-5 and res['longest'] < 77
    out = capsys.readouterr().out
    assert 'open_clip encode_text, full context' in out and 'ours, short forward' in out
