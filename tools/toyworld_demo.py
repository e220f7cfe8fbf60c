"""Toy-world demo (offline): segment generated scenes with the shipped toy CLIP + toy VFM.

Generates a toy dataset under OUT/data (seeded), fits the GPUA map on its unlabelled fit split,
segments the val split through tools/test.py and writes OUT/overlays/val_XXXX.png panels
(image | ground truth | prediction).  The toy world validates the software, not the paper.

Usage: python tools/toyworld_demo.py [--out outputs/toyworld_demo] [--n 8] [--seed 3]
           [--method gpua_sclip|gpua_scclip|sclip|scclip|maskclip|vanilla] [--fusion-weight L]
"""
import argparse
import os.path as osp
import sys


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', default='outputs/toyworld_demo')
    p.add_argument('--n', type=int, default=8, help='scenes to segment')
    p.add_argument('--seed', type=int, default=3, help='world seed of the generated scenes')
    p.add_argument('--fit-images', type=int, default=200, help='unlabelled scenes for the fit')
    p.add_argument('--method', default='gpua_sclip',
                   choices=('gpua_sclip', 'gpua_scclip', 'sclip', 'scclip', 'maskclip', 'vanilla'))
    p.add_argument('--fusion-weight', type=float, default=None,
                   help='override the config\'s lambda (weight of the CLIP logits)')
    args = p.parse_args(argv)
    if args.n < 1 or args.fit_images < 1:
        print('error: --n and --fit-images must be >= 1', file=sys.stderr)
        return 2
    if args.fusion_weight is not None and not 0 <= args.fusion_weight <= 1:
        print(f'error: --fusion-weight must lie in [0, 1], got {args.fusion_weight}',
              file=sys.stderr)
        return 2
    from gpua_mmseg.toyworld.demo import run_demo
    res = run_demo(args.out, n=args.n, seed=args.seed, n_fit=args.fit_images,
                   method=args.method, fusion_weight=args.fusion_weight)
    print(f'TOY WORLD {res["method"]}: mIoU {res["miou"]:.1f} % on {args.n} generated scenes; '
          f'overlays in {osp.join(args.out, "overlays")}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
