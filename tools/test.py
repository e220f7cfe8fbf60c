"""Evaluate a config with MMEngine's Runner (MMSeg's tools/test.py CLI, training-free flavour).

Training-free methods need no checkpoint: the encoders load their own weights from the model
config (``model.clip.pretrained`` ...).  ``--checkpoint`` is accepted for models that do have one.

Examples::

    python tools/test.py configs/sclip/sclip_vitb16_voc21.py
    python tools/test.py configs/proxyclip/proxyclip_vitb16_voc21.py --tta   # flip + 3 scales
    torchrun --nproc_per_node 2 tools/test.py CONFIG --launcher pytorch  # GPUs: NCCL; CPU: gloo
    python tools/test.py configs/scclip/scclip_vitb16_voc21.py --work-dir work_dirs/x \\
        --cfg-options test_dataloader.dataset.data_root=/data/VOC2012 model.autocast_dtype=fp16
    bash tools/dist_test.sh configs/sclip/sclip_vitb16_ade20k.py 8

Prints MMSeg's per-class IoU table and the mIoU.  ``--checkpoint`` (and ``load_from`` in any
config that imports ``gpua_mmseg.models``) is read by :mod:`gpua_mmseg.checkpoint`: safetensors
or ``torch.load(weights_only=True)``, never a pickle that can run code.
"""
import argparse
import errno
import os
import os.path as osp
import re
import sys
import tempfile
import traceback

# Heavy imports (torch, mmseg) wait until the arguments are checked, so a typo fails fast.
# Order matters then: gpua_mmseg.models first (mmcv-lite placeholder for mmcv._ext, registries),
# then anything that imports mmseg.


EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT = 0, 1, 2

EPILOG = '''exit status:
  0  evaluation finished, metrics printed
  1  internal error (a bug: the traceback is printed; please report it)
  2  bad input: a missing or unreadable config / checkpoint / weights / alignment artifact /
     dataset file, an invalid option value, an unwritable --work-dir / --out / --show-dir, or a
     full disk; one line on stderr names the file or value and the fix (--traceback shows
     where it was raised)'''


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Evaluate a gpua_mmseg config (mIoU).', epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('config', help='config file, e.g. configs/sclip/sclip_vitb16_voc21.py')
    p.add_argument('checkpoint_pos', nargs='?', metavar='CHECKPOINT', default=None,
                   help='optional checkpoint, as in MMSeg (same as --checkpoint)')
    p.add_argument('--checkpoint', default=None,
                   help='optional checkpoint to load (training-free configs need none)')
    p.add_argument('--tta', action='store_true',
                   help='test-time augmentation that keeps the method: class scores of every '
                        'view (--tta-scales, and a horizontal flip) averaged before the '
                        'thresholds (model.tta; MMSeg\'s SegTTAModel is not used)')
    p.add_argument('--tta-scales', type=float, nargs='+', default=[0.75, 1.0, 1.25],
                   metavar='S', help='--tta image scale factors (default 0.75 1.0 1.25)')
    p.add_argument('--tta-no-flip', action='store_true', help='--tta without the flipped views')
    p.add_argument('--work-dir', help='folder for logs and results (default: '
                   'work_dirs/<config name>)')
    p.add_argument('--out', help='write the predicted label maps (PNG) into this folder')
    p.add_argument('--show', action='store_true', help='show predictions in a window')
    p.add_argument('--show-dir', help='save images with predictions drawn on them here')
    p.add_argument('--wait-time', type=float, default=2, help='seconds per shown image')
    p.add_argument('--cfg-options', nargs='+', metavar='KEY=VALUE',
                   help='override config entries, key=value, e.g. model.logit_scale=50 '
                        'test_dataloader.dataset.data_root=/data/VOC2012')
    p.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or --local_rank
    p.add_argument('--local_rank', '--local-rank', type=int, default=0)
    p.add_argument('--traceback', action='store_true',
                   help='also print the traceback of bad-input errors (exit status 2)')
    args = p.parse_args(argv)
    if args.checkpoint_pos is not None:
        if args.checkpoint is not None and args.checkpoint != args.checkpoint_pos:
            p.error(f'two checkpoints given ({args.checkpoint_pos!r} and --checkpoint '
                    f'{args.checkpoint!r}); give one')
        args.checkpoint = args.checkpoint_pos
    if args.tta and any(not s > 0 for s in args.tta_scales):
        p.error(f'--tta-scales must be positive, got {args.tta_scales}')
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def _enable_visualization(cfg, args):
    hooks = cfg.get('default_hooks') or {}
    if 'visualization' not in hooks:
        raise ValueError('--show / --show-dir need default_hooks.visualization '
                         "(type='SegVisualizationHook') in the config; inherit "
                         'configs/_base_/default_runtime.py')
    hooks['visualization']['draw'] = True
    if args.show:
        hooks['visualization']['show'] = True
        hooks['visualization']['wait_time'] = args.wait_time
    if args.show_dir:
        cfg.visualizer['save_dir'] = args.show_dir


def _parse_cfg_options(options):
    """['a.b=1', 'c=[x,y]'] -> {'a.b': 1, 'c': ['x', 'y']} with MMEngine's value syntax."""
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(prog='--cfg-options')
    p.add_argument('--o', nargs='+', action=DictAction)
    for opt in options:
        if '=' not in opt:
            raise ValueError(f'--cfg-options entry {opt!r} is not KEY=VALUE')
    return p.parse_args(['--o'] + list(options)).o


def build_cfg(args):
    """Config with the CLI options applied (no side effects besides reading the file)."""
    import gpua_mmseg.models  # noqa: F401  (first: mmcv-lite placeholder before mmseg)
    import gpua_mmseg.datasets  # noqa: F401,I001
    from mmengine.config import Config
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options:
        cfg.merge_from_dict(_parse_cfg_options(args.cfg_options))
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('work_dirs', osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        _enable_visualization(cfg, args)
    if args.out:
        cfg.test_evaluator['output_dir'] = args.out
    if args.tta:
        # inside GPUASegmentor: scores averaged before prob_thd / area_thd / background
        cfg.model['tta'] = dict(scales=list(args.tta_scales), flip=not args.tta_no_flip)
    return cfg


def init_cpu_dist(launcher: str) -> None:
    """Distributed evaluation without GPUs: a gloo process group, made before the Runner (whose
    mmengine ``init_dist`` calls ``torch.cuda.set_device`` unconditionally and then skips an
    already initialised group)."""
    import torch
    if launcher == 'none' or torch.cuda.is_available() or torch.distributed.is_initialized():
        return
    if launcher != 'pytorch':
        raise ValueError(f'--launcher {launcher} without GPUs: use torchrun ... --launcher '
                         'pytorch (gloo on CPU)')
    torch.distributed.init_process_group(backend='gloo')


# mmengine's registry re-raises build errors as type(e)(f'class `X` in path.py: {e}').
_REGISTRY_PREFIX = re.compile(r'class `[^`]+` in [^:]+: ')


def _bad_input_types():
    types = [OSError, ValueError, KeyError, TypeError, SyntaxError]
    try:
        from safetensors import SafetensorError
        types.append(SafetensorError)
    except ImportError:
        pass
    return tuple(types)


def describe_error(e: BaseException) -> str:
    """One message for a bad-input exception: mmengine's class prefixes removed, the file
    named and a fix for file-system errors."""
    if isinstance(e, OSError) and e.errno is not None and getattr(e, 'filename', None):
        what = f'{e.strerror}: {e.filename!r}'
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return f'{what} is not writable/readable; choose another folder or fix its permissions'
        if e.errno == errno.ENOSPC:
            return f'{what}: the disk is full; free space or choose another --work-dir / --out'
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return f'{what} does not exist; check the path (configs, data_root, weights)'
        return what
    msg = _REGISTRY_PREFIX.sub('', str(e.args[0]) if isinstance(e, KeyError) and e.args
                               else str(e)).strip()
    if isinstance(e, TypeError) and 'unexpected keyword argument' in msg:
        msg += '; check that key in the config / --cfg-options (see the class docstring)'
    return msg or type(e).__name__


def check_writable_folder(path: str, option: str) -> None:
    """Raise ValueError unless ``path`` is (or can be created as) a writable folder.  Probes the
    nearest existing ancestor with a temporary file, so nothing is left on disk."""
    full = osp.abspath(path)
    probe = full
    while not osp.exists(probe):
        parent = osp.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not osp.isdir(probe):
        raise ValueError(f'{option} {path!r}: {probe!r} is a file, not a folder; choose a folder')
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise ValueError(f'{option} {path!r} is not writable ({e.strerror} in {probe!r}); choose '
                         'a writable folder') from None


def _fail(e: BaseException, args) -> int:
    if args is not None and args.traceback:
        traceback.print_exception(type(e), e, e.__traceback__)
    print(f'error: {describe_error(e)}', file=sys.stderr)
    return EXIT_BAD_INPUT


def main(argv=None):
    args = parse_args(argv)
    if not osp.isfile(args.config):
        print(f'error: config file {args.config!r} does not exist (configs live under '
              'configs/<method>/, e.g. configs/sclip/sclip_vitb16_voc21.py)', file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.checkpoint is not None and not osp.isfile(args.checkpoint):
        print(f'error: checkpoint {args.checkpoint!r} does not exist', file=sys.stderr)
        return EXIT_BAD_INPUT
    bad_input = _bad_input_types()
    try:
        for option, path in (('--out', args.out), ('--show-dir', args.show_dir)):
            if path:
                check_writable_folder(path, option)
        cfg = build_cfg(args)
        check_writable_folder(cfg.work_dir, '--work-dir' if args.work_dir else 'work_dir')
        if args.checkpoint is not None:
            # Fail before the (slow) model build; the Runner reads it again through the same
            # safe loader (registered by gpua_mmseg.models).
            from gpua_mmseg.checkpoint import load_checkpoint_file
            load_checkpoint_file(args.checkpoint)
        # Every rank writes its own images' PNGs into --out / --show-dir, but MMSeg's IoUMetric
        # creates output_dir on rank 0 only: a rank that reaches its first image before rank 0
        # has built its metric would fail (FileNotFoundError, exit 2).  makedirs is idempotent.
        for path in (args.out, args.show_dir):
            if path:
                os.makedirs(path, exist_ok=True)
        init_cpu_dist(args.launcher)
        if args.launcher != 'none' and cfg.get('env_cfg', {}).get('dist_cfg'):
            import torch
            if not torch.cuda.is_available():
                cfg.env_cfg.dist_cfg['backend'] = 'gloo'
        from mmengine.runner import Runner
        runner = Runner.from_cfg(cfg)
        import time
        t0 = time.perf_counter()
        metrics = runner.test()
        elapsed = time.perf_counter() - t0
    except bad_input as e:
        return _fail(e, args)
    print('metrics: ' + ', '.join(f'{k}={float(v):.2f}' for k, v in metrics.items()))
    print(speed_line(len(runner.test_dataloader.dataset), elapsed))
    return EXIT_OK


def speed_line(n_images: int, seconds: float) -> str:
    """``speed: img_per_s=..., peak_mem_mb=..., mem=cuda|rss`` of the test loop (dataloading
    and first-use text encoding included; model building not)."""
    import resource

    import torch
    if torch.cuda.is_available():
        peak, kind = torch.cuda.max_memory_allocated() / 2 ** 20, 'cuda'
    else:
        peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 'rss'
    return (f'speed: img_per_s={n_images / max(seconds, 1e-9):.3f}, peak_mem_mb={peak:.0f}, '
            f'mem={kind}')


if __name__ == '__main__':
    sys.exit(main())
