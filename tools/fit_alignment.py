"""Fit the GPUA (unsupervised) or SOTAlign (few labelled images) map of a GPUA config.

Builds the config's GPUASegmentor and VFM, extracts paired CLIP / VFM patch features of the test
dataset's images with the same sliding window as inference into a resumable on-disk cache
(kill it and re-run: finished shards are reused, the result is the same), fits the orthogonal map
from the cache (streamed, memory bounded) and writes the artifact atomically, plus a
diagnostics PNG beside it.

Examples::

    python tools/fit_alignment.py configs/gpua/gpua_scclip_dinov3_vitb16_voc21.py
    python tools/fit_alignment.py configs/gpua/gpua_scclip_dinov3_vitb16_voc21.py \\
        --method sotalign --labeled 20 --out work_dirs/alignment/voc21_sot.safetensors
    torchrun --nproc_per_node 8 tools/fit_alignment.py CONFIG --launcher pytorch

Default ``--out``: the config's ``model.decode_head.alignment_path``.  Exit status 2 and no
artifact on bad input (unknown config, missing dataset, no images).
"""
import argparse
import os
import os.path as osp
import sys


def parse_args(argv=None):
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description='Fit a GPUA / SOTAlign alignment artifact.')
    p.add_argument('config', help='GPUA config, e.g. configs/gpua/gpua_scclip_dinov3_vitb16_voc21.py')
    p.add_argument('--method', choices=('gpua', 'sotalign'), default='gpua')
    p.add_argument('--labeled', type=int, default=0,
                   help='SOTAlign: the first N images of --labeled-split give labelled '
                   '(patch, class) pairs')
    p.add_argument('--labeled-split', choices=('train', 'test'), default='train',
                   help="where the labelled images come from: 'train' (default: the config's "
                   'train_dataloader, else the test split with val->train in its paths) or '
                   "'test' (the evaluated split; needs --allow-test-labels)")
    p.add_argument('--allow-test-labels', action='store_true',
                   help='allow --labeled-split test (a warning is recorded in the artifact)')
    p.add_argument('--max-images', type=int, default=None,
                   help='use only the first M images of the dataset')
    p.add_argument('--out', default=None, help='artifact path (default: the config\'s '
                   'model.decode_head.alignment_path)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                   help='override config entries, e.g. test_dataloader.dataset.data_root=/data')
    p.add_argument('--fit-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                   help='GPUAConfig / SOTAlignConfig fields, e.g. refine_steps=100 class_prior=clip')
    p.add_argument('--prototype-mode', choices=('query', 'class_mean'), default='query')
    p.add_argument('--cache-dir', default=None,
                   help='feature cache (default: feature_cache/ beside the artifact)')
    p.add_argument('--images-per-shard', type=int, default=1)
    p.add_argument('--cache-dtype', choices=('float16', 'bfloat16', 'float32'),
                   default='float16')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--device', default=None,
                   help='cpu | cuda | cuda:N (default: cuda:LOCAL_RANK if available, else cpu)')
    p.add_argument('--no-plot', action='store_true', help='skip the diagnostics PNG')
    p.add_argument('--launcher', choices=('none', 'pytorch'), default='none')
    p.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = p.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def _init_dist(launcher):
    """(rank, world_size); under torchrun: mmengine's init_dist on GPUs, gloo on CPU."""
    if launcher == 'none':
        return 0, 1
    import torch
    from mmengine.dist import get_dist_info, init_dist
    if torch.cuda.is_available():
        init_dist(launcher)
    else:
        torch.distributed.init_process_group(backend='gloo')
    return get_dist_info()


def main(argv=None):
    args = parse_args(argv)
    if not osp.isfile(args.config):
        print(f'error: config file {args.config!r} does not exist (GPUA configs live under '
              'configs/gpua/)', file=sys.stderr)
        return 2
    import gpua_mmseg.models  # noqa: F401  (mmcv-lite placeholder before mmseg)
    import torch
    from mmengine.config import Config

    from gpua_mmseg.fitting import FitInterrupted, FitOptions, run_fit
    try:
        cfg = Config.fromfile(args.config)
        if args.cfg_options:
            cfg.merge_from_dict(args.cfg_options)
    except (TypeError, ValueError, KeyError, SyntaxError) as e:
        print(f'error: cannot read config {args.config!r}: {e}', file=sys.stderr)
        return 2
    rank, world = _init_dist(args.launcher)
    device = args.device
    if device is None:
        device = f'cuda:{os.environ.get("LOCAL_RANK", 0)}' if torch.cuda.is_available() else 'cpu'
    stop = os.environ.get('GPUA_FIT_STOP_AFTER_SHARDS')  # testing hook: simulate a killed job
    opts = FitOptions(method=args.method, labeled=args.labeled, max_images=args.max_images,
                      labeled_split=args.labeled_split, allow_test_labels=args.allow_test_labels,
                      out=args.out, cache_dir=args.cache_dir, seed=args.seed, device=device,
                      prototype_mode=args.prototype_mode, images_per_shard=args.images_per_shard,
                      cache_dtype=args.cache_dtype, fit_cfg=dict(args.fit_options or {}),
                      config_path=args.config, stop_after_shards=int(stop) if stop else None,
                      rank=rank, world_size=world, plot=not args.no_plot)
    try:
        out = run_fit(cfg, opts)
    except FitInterrupted as e:
        print(f'interrupted: {e}', file=sys.stderr)
        return 3
    except (ValueError, FileNotFoundError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    if out is not None:
        if args.method == 'sotalign' and args.labeled_split == 'test':
            print('warning: the labelled pairs come from the evaluated split; the artifact '
                  "records it in meta['warnings']", file=sys.stderr)
        print(f'wrote {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
