"""Scaling benchmark of the GPUA fit on synthetic patches (wall time, peak RSS, recovery).

Each N runs in a fresh subprocess so its peak RSS is its own.  Features are streamed from a
deterministic synthetic chunk source (never materialised), exactly like the on-disk feature
cache of tools/fit_alignment.py; the time of one generation pass is reported separately since
the fit makes several passes over the data.

    python tools/benchmark_alignment.py                    # N = 1e5, 3e5, 1e6 (dv 768, dc 512, K 171)
    python tools/benchmark_alignment.py --n 20000 --dv 64 --dc 48 --k 20   # quick
    python tools/benchmark_alignment.py --semi      # semi-supervised + class-prior tables (issue 9)

``--semi`` runs on ``synthetic.make_hard_problem`` (K = 40, dv = dc = 64, correlated prototypes,
sub-clusters, modality gap, CLIP confusions): held-out accuracy / mean per-class accuracy of the
pairs' Procrustes teacher, unsupervised GPUA and SOTAlign (with and without the unpaired CLIP
rows, and SOTAlign as it was before issue 9) for pairs in {10, 30, 100, 300} on balanced and
Zipf 1.1 classes, plus the GPUA class-prior table; writes both to ``--semi-out``.
"""
import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time


def child(args):
    import torch

    from gpua_mmseg.alignment import GPUAConfig, fit_gpua
    from gpua_mmseg.alignment._checks import l2n
    from gpua_mmseg.alignment.synthetic import make_problem
    torch.manual_seed(0)
    prob = make_problem(dv=args.dv, dc=args.dc, k=args.k, sigma_v=0.5, sigma_c=2.0, seed=0)
    src = prob.stream(args.n, chunk=args.chunk)
    t0 = time.perf_counter()
    for _ in src():
        pass
    gen = time.perf_counter() - t0
    cfg = GPUAConfig(chunk_size=args.chunk, device=args.device)
    if args.refine_steps is not None:
        cfg.refine_steps = args.refine_steps
    if args.old_refine:         # the refinement as it was before issue 13 (the paper's steps)
        cfg.refine_steps, cfg.refine_batch_size, cfg.refine_retract_tol = 200, 2048, 1e-6
    t0 = time.perf_counter()
    amap = fit_gpua(src, None, prob.prototypes, cfg, seed=0)
    wall = time.perf_counter() - t0
    v, c, y = prob.sample(20000, chunk_index=10_000)      # held-out patches
    T = prob.prototypes
    acc = lambda lg: float((lg.argmax(-1) == y).float().mean())  # noqa: E731
    out = dict(n=args.n, wall_s=wall, gen_pass_s=gen,
               peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
               err_full=prob.recovery_error(amap.W), err_span=prob.recovery_error(amap.W, True),
               acc_clip=acc(l2n(c) @ T.T), acc_gpua=acc(amap.logits(v, T)),
               orth=amap.orthogonality_error(), timings=amap.meta['timings_s'],
               refine_steps=f'{cfg.refine_steps} x {cfg.refine_batch_size}, tol '
                            f'{cfg.refine_retract_tol:g}',
               threads=torch.get_num_threads())
    print('RESULT ' + json.dumps(out))


def _fmt(a):
    return f'{a[0]:.3f} / {a[1]:.3f}'


def semi_tables(args):
    """The issue-9 tables (markdown text)."""
    import torch

    from gpua_mmseg.alignment import GPUAConfig, SOTAlignConfig, fit_gpua, fit_sotalign
    from gpua_mmseg.alignment.synthetic import accuracy, make_hard_problem, semi_split
    torch.manual_seed(0)
    lines = []
    out = lambda s='': (lines.append(s), print(s, flush=True))  # noqa: E731

    def ev(amap, s, T):
        return accuracy(amap.logits(s.test_vfm, T), s.test_labels)

    out(f'Synthetic problem: `make_hard_problem` (K = 40, dv = dc = 64, 8 super-classes with '
        f'correlated prototypes, 3 sub-clusters per class, modality gap, half the classes '
        f'confused by CLIP), {args.unpaired:,d} unpaired patches with their CLIP features, '
        f'pairs drawn with the class frequencies, 10,000 held-out test patches; '
        f'{torch.get_num_threads()} threads. Cells: accuracy / mean per-class accuracy of '
        'the fitted map alone (argmax cos(v W, t)).')
    out()
    out('### GPUA class prior (no labels)')
    out()
    out('| classes | uniform | clip | unbalanced | adaptive (default) | '
        'L1(prior, truth): clip / adaptive | fit s (adaptive) |')
    out('|---|---|---|---|---|---|---|')
    gpua_acc = {}
    for bal in args.balances_prior:
        p = make_hard_problem(bal, seed=0)
        s = semi_split(p, 0, args.unpaired, 10000)
        T = p.prototypes
        cells, l1 = {}, {}
        for prior in ('uniform', 'clip', 'unbalanced', 'adaptive'):
            t0 = time.perf_counter()
            amap = fit_gpua(s.unpaired_vfm, s.unpaired_clip, T, GPUAConfig(class_prior=prior),
                            seed=0)
            wall = time.perf_counter() - t0
            cells[prior] = ev(amap, s, T)
            l1[prior] = float((torch.tensor(amap.meta['class_prior_used'])
                               - p.class_probs).abs().sum())
        gpua_acc[bal] = (cells['adaptive'], wall)
        out(f'| {bal} | ' + ' | '.join(_fmt(cells[k]) for k in
                                       ('uniform', 'clip', 'unbalanced', 'adaptive'))
            + f' | {l1["clip"]:.2f} / {l1["adaptive"]:.2f} | {wall:.1f} |')
    out()
    out('### SOTAlign: few labelled pairs + unpaired patches')
    out()
    out('| classes | pairs | teacher (pairs only) | GPUA (no labels) | SOTAlign + CLIP rows '
        '(default) | SOTAlign, VFM rows only | SOTAlign before issue 9 | '
        'wall s: teacher / GPUA / +CLIP / VFM only / before | chosen (+CLIP, VFM only) |')
    out('|---|---|---|---|---|---|---|---|---|')
    old = dict(class_prior='uniform', select='none')
    for bal in args.balances_semi:
        p = make_hard_problem(bal, seed=0)
        T = p.prototypes
        if bal not in gpua_acc:
            s = semi_split(p, 0, args.unpaired, 10000)
            t0 = time.perf_counter()
            amap = fit_gpua(s.unpaired_vfm, s.unpaired_clip, T, GPUAConfig(), seed=0)
            gpua_acc[bal] = (ev(amap, s, T), time.perf_counter() - t0)
        for n in args.pairs:
            s = semi_split(p, n, args.unpaired, 10000)
            row, walls, chosen = [], [], []
            for j, (cfg, clip) in enumerate(((SOTAlignConfig(otp_iters=0, select='none'), None),
                                             (SOTAlignConfig(), s.unpaired_clip),
                                             (SOTAlignConfig(), None),
                                             (SOTAlignConfig(**old), None))):
                if j >= 2 and args.semi_quick:      # the slow VFM-only variants
                    row.append((math.nan, math.nan))
                    walls.append(math.nan)
                    chosen.append('-')
                    continue
                t0 = time.perf_counter()
                amap = fit_sotalign(s.pair_vfm, s.pair_labels, s.unpaired_vfm, T, cfg, seed=0,
                                    unpaired_clip=clip)
                walls.append(time.perf_counter() - t0)
                row.append(ev(amap, s, T))
                chosen.append(amap.meta['selected'])
            g, gw = gpua_acc[bal]
            out(f'| {bal} | {n} | {_fmt(row[0])} | {_fmt(g)} | {_fmt(row[1])} | '
                f'{_fmt(row[2])} | {_fmt(row[3])} | {walls[0]:.1f} / {gw:.1f} / {walls[1]:.1f} '
                f'/ {walls[2]:.1f} / {walls[3]:.1f} | {chosen[1]}, {chosen[2]} |')
    return '\n'.join(lines) + '\n'


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--semi', action='store_true', help='issue-9 tables (see module docstring)')
    p.add_argument('--semi-out', default='docs/bench_alignment_semi.md')
    p.add_argument('--semi-quick', action='store_true',
                   help='skip the two VFM-only SOTAlign columns (their CV refits are slow)')
    p.add_argument('--pairs', type=int, nargs='+', default=[10, 30, 100, 300])
    p.add_argument('--unpaired', type=int, default=20000)
    p.add_argument('--balances-semi', nargs='+', default=['balanced', 'zipf1.1'])
    p.add_argument('--balances-prior', nargs='+', default=['balanced', 'zipf1.1', 'zipf1.6'])
    p.add_argument('--n', type=float, nargs='+', default=[1e5, 3e5, 1e6])
    p.add_argument('--dv', type=int, default=768)
    p.add_argument('--dc', type=int, default=512)
    p.add_argument('--k', type=int, default=171)
    p.add_argument('--chunk', type=int, default=8192)
    p.add_argument('--device', default=None)
    p.add_argument('--refine-steps', type=int, default=None,
                   help='GPUAConfig.refine_steps for every row (default: the config default)')
    p.add_argument('--refine-ab', action='store_true',
                   help='side by side: each N fitted with the refinement as it was (200 steps '
                        'x 2048 rows, retraction tol 1e-6) and with the defaults; prints the '
                        'refinement-stage ratio')
    p.add_argument('--old-refine', action='store_true', help=argparse.SUPPRESS)
    p.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.semi:
        text = semi_tables(args)
        from gpua_mmseg.utils.atomic import atomic_write_text
        atomic_write_text(args.semi_out, '# Alignment benchmark: class priors and semi-supervised '
                          'fits (issue 9)\n\n' + text)
        print(f'wrote {args.semi_out}', file=sys.stderr)
        return
    if args.child:
        args.n = int(args.n[0])
        return child(args)
    rows = []
    variants = [True, False] if args.refine_ab else [None]
    for n in args.n:
        for old_refine in variants:
            cmd = [sys.executable, __file__, '--child', '--n', str(int(n)), '--dv', str(args.dv),
                   '--dc', str(args.dc), '--k', str(args.k), '--chunk', str(args.chunk)]
            if args.device:
                cmd += ['--device', args.device]
            if args.refine_steps is not None:
                cmd += ['--refine-steps', str(args.refine_steps)]
            if old_refine:
                cmd += ['--old-refine']
            res = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
            line = [ln for ln in res.stdout.splitlines() if ln.startswith('RESULT ')]
            if res.returncode != 0 or not line:
                sys.stderr.write(res.stdout + res.stderr)
                sys.exit(f'benchmark child for N={int(n)} failed (exit {res.returncode})')
            rows.append(json.loads(line[0][7:]))
            r = rows[-1]
            print(f'N={r["n"]:>9,d} refine_steps={r["refine_steps"]} done in '
                  f'{r["wall_s"]:.1f}s', file=sys.stderr)
    print(f'\nGPUA fit, dv={args.dv} dc={args.dc} K={args.k}, {rows[0]["threads"]} threads, '
          f'device={args.device or "cpu"}\n')
    print('| N | refinement (steps x batch, tol) | fit wall (s) | of which data generation (s) | s per 1e5 | peak RSS (GB) | '
          'stages: init / sinkhorn / centroids / procrustes / refine (s) | '
          '‖W−Q‖/√dc (span of prototypes) | ‖W−Q‖/√dc (full) | acc CLIP → GPUA | max|WᵀW−I| |')
    print('|---|---|---|---|---|---|---|---|---|---|---|')
    # the fit reads the stream twice (init pass + Procrustes pass; centroids use the pool)
    for r in rows:
        t = r['timings']
        st = ' / '.join(f'{t.get(k, 0):.1f}' for k in
                        ('init', 'sinkhorn', 'centroids', 'procrustes', 'refine'))
        print(f'| {r["n"]:,d} | {r["refine_steps"]} | {r["wall_s"]:.1f} | {2 * r["gen_pass_s"]:.1f} | '
              f'{r["wall_s"] / r["n"] * 1e5:.2f} | '
              f'{r["peak_rss_gb"]:.2f} | {st} | {r["err_span"]:.3f} | '
              f'{r["err_full"]:.3f} | {r["acc_clip"]:.3f} → {r["acc_gpua"]:.3f} | '
              f'{r["orth"]:.1e} |')

    if args.refine_ab:
        print('\nRefinement stage, side by side (same N, same data): ')
        for a, b in zip(rows[::2], rows[1::2]):
            ta, tb = a['timings']['refine'], b['timings']['refine']
            print(f'* N={a["n"]:,d}: before ({a["refine_steps"]}) {ta:.1f} s, span error '
                  f'{a["err_span"]:.3f}; now ({b["refine_steps"]}) {tb:.1f} s, span error '
                  f'{b["err_span"]:.3f}: ratio {tb / max(ta, 1e-9):.2f}')


if __name__ == '__main__':
    main()
