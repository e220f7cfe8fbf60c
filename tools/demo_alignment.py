"""Alignment demo: fit GPUA (no labels) and SOTAlign (few labels) on a synthetic problem.

Prints pseudo-label / classification accuracy and orthogonality, and writes a before/after
2-D projection (the picture of the GPUA paper's Figure 1): VFM patch features placed in CLIP
space by an arbitrary orthogonal map (before) and by the fitted map (after), with the text
prototypes.  Runs in well under a minute on a 2-core CPU.

    python tools/demo_alignment.py --out outputs/demo_alignment
"""
import argparse
import json
import os.path as osp
import sys
import time

import torch


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--out', default='outputs/demo_alignment', help='output directory')
    p.add_argument('--n', type=int, default=20000, help='number of synthetic patches')
    p.add_argument('--classes', type=int, default=40, help='number of prototypes K')
    p.add_argument('--dim', type=int, default=32, help='feature dimension (dv = dc)')
    p.add_argument('--pairs', type=int, default=24, help='labelled pairs for SOTAlign')
    p.add_argument('--seed', type=int, default=0)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from gpua_mmseg.alignment import GPUAConfig, SOTAlignConfig, fit_gpua, fit_sotalign
    from gpua_mmseg.alignment._checks import l2n
    from gpua_mmseg.alignment.synthetic import make_problem, random_orthogonal
    from gpua_mmseg.vis.alignment import plot_before_after

    if args.n < args.classes or args.classes < 2 or args.dim < 2:
        sys.exit('error: need --n >= --classes >= 2 and --dim >= 2')
    prob = make_problem(dv=args.dim, dc=args.dim, k=args.classes, sigma_v=0.6, sigma_c=2.0,
                        seed=args.seed)
    v, c, y = prob.sample(args.n)
    T = prob.prototypes
    acc = lambda logits: float((logits.argmax(-1) == y).float().mean())  # noqa: E731
    t0 = time.perf_counter()
    gpua, corr = fit_gpua(v, c, T, GPUAConfig(), seed=args.seed, return_correspondence=True)
    t_gpua = time.perf_counter() - t0
    t0 = time.perf_counter()
    # the unpaired patches' CLIP rows go in too: SOTAlign builds on GPUA's correspondences
    semi = fit_sotalign(v[:args.pairs], y[:args.pairs], v, T, SOTAlignConfig(), seed=args.seed,
                        unpaired_clip=c)
    t_semi = time.perf_counter() - t0
    clip_logits = l2n(c) @ T.T
    rows = {
        'CLIP patches only': dict(acc=acc(clip_logits)),
        'GPUA pseudo-labels (stage 1)': dict(acc=acc(corr.plan(c, v))),
        'GPUA map alone (no labels)': dict(acc=acc(gpua.logits(v, T)), time_s=t_gpua,
                                           orth=gpua.orthogonality_error(),
                                           recovery=prob.recovery_error(gpua.W)),
        'fused 0.9*CLIP + 0.1*GPUA': dict(acc=acc(0.9 * clip_logits + 0.1 * gpua.logits(v, T))),
        f'SOTAlign map ({args.pairs} pairs)': dict(acc=acc(semi.logits(v, T)), time_s=t_semi,
                                                  orth=semi.orthogonality_error(),
                                                  recovery=prob.recovery_error(semi.W)),
    }
    print(f'synthetic problem: N={args.n}, K={args.classes}, d={args.dim}, Zipf class sizes, '
          'noisy CLIP side with a modality gap')
    print(f'{"":34s} {"accuracy":>9s} {"||W-Q||/sqrt(d)":>16s} {"max|WtW-I|":>11s} {"time":>7s}')
    for name, r in rows.items():
        rec = f'{r["recovery"]:.3f}' if 'recovery' in r else ''
        orth = f'{r["orth"]:.1e}' if 'orth' in r else ''
        t = f'{r["time_s"]:.1f}s' if 'time_s' in r else ''
        print(f'{name:34s} {r["acc"]:9.3f} {rec:>16s} {orth:>11s} {t:>7s}')
    before = random_orthogonal(args.dim, args.dim, torch.Generator().manual_seed(args.seed + 1))
    png = osp.join(args.out, 'alignment_before_after.png')
    plot_before_after(v[:3000], y[:3000], T, {'before: arbitrary orthogonal map': before,
                                              'after: GPUA (no labels)': gpua.W,
                                              f'after: SOTAlign ({args.pairs} pairs)': semi.W},
                      png, title='VFM patches (dots) and text prototypes (stars) in CLIP space')
    summary = osp.join(args.out, 'summary.json')
    from gpua_mmseg.utils.atomic import atomic_write

    def write(tmp):
        with open(tmp, 'w') as f:
            json.dump(rows, f, indent=2)
    atomic_write(summary, write)
    print(f'wrote {png} and {summary}')


if __name__ == '__main__':
    main()
