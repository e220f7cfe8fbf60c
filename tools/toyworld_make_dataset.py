"""Write a toy-world dataset (procedural scenes + pixel labels) in MMSeg's VOC layout.

Usage: python tools/toyworld_make_dataset.py OUT [--seed 1] [--size 64]
           [--splits fit:200 val:100] [--overwrite]

Deterministic: the same arguments give the same files.  Seed 1000 is the training world of the
toy encoders; evaluate on other seeds.  Exit status 2 on bad arguments (nothing written).
See gpua_mmseg/toyworld/dataset.py for the layout.
"""
import argparse
import sys


def parse_splits(items):
    out = []
    for it in items:
        name, sep, n = it.partition(':')
        if not sep or not n.isdigit():
            raise ValueError(f'bad split {it!r}; write NAME:COUNT, e.g. val:100')
        out.append((name, int(n)))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('out')
    p.add_argument('--seed', type=int, default=1)
    p.add_argument('--size', type=int, default=64)
    p.add_argument('--splits', nargs='+', default=['fit:200', 'val:100'])
    p.add_argument('--overwrite', action='store_true')
    args = p.parse_args(argv)
    from gpua_mmseg.toyworld.dataset import write_dataset
    from gpua_mmseg.toyworld.train import TRAIN_DATA_SEED
    try:
        splits = parse_splits(args.splits)
        if args.seed == TRAIN_DATA_SEED:
            print(f'warning: seed {TRAIN_DATA_SEED} is the encoders\' training world',
                  file=sys.stderr)
        meta = write_dataset(args.out, args.seed, splits, args.size, overwrite=args.overwrite)
    except (ValueError, FileExistsError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(f'wrote {args.out}: {meta["splits"]} images of {args.size}x{args.size}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
