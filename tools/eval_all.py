"""Evaluate many configs and write one mIoU table (markdown + CSV): rows = methods, columns =
benchmark keys, plus their mean; beside it (same markdown file) a speed table: img/s and peak
memory per method, from each tools/test.py run's ``speed:`` line.

Every variant on every benchmark, GPUA variants included::

    python tools/eval_all.py --configs configs/{vanilla,maskclip,clearclip,naclip,sclip,scclip,proxyclip}/*_vitb16_*.py \\
        configs/gpua/gpua_*_dinov3_vitb16_*.py --fit-missing --out work_dirs/table.md

Each config runs ``tools/test.py`` in its own process (isolates MMEngine's global state and the
memory of one model from the next); with ``--fit-missing`` a GPUA config whose artifact does not
exist is first fitted with ``tools/fit_alignment.py``.  A config that fails is reported in the
table as ``fail`` and makes the exit status non-zero; the others still run.

    python tools/eval_all.py --configs configs/scclip/*.py configs/gpua/gpua_scclip_*.py \\
        --fit-missing --out work_dirs/table.md
"""
import argparse
import csv
import io
import os
import os.path as osp
import re
import subprocess
import sys

from gpua_mmseg.utils.atomic import atomic_write_text

KEYS = ('voc21', 'context60', 'coco_object', 'voc20', 'context59', 'coco_stuff164k',
        'cityscapes', 'ade20k')  # the order of the benchmarks table
HERE = osp.dirname(osp.abspath(__file__))
_MIOU = re.compile(r'^metrics: .*\bmIoU=([0-9.]+)', re.M)
_SPEED = re.compile(r'^speed: img_per_s=([0-9.]+), peak_mem_mb=([0-9.]+), mem=(\w+)', re.M)
SPEED = {}  # config -> (img/s, peak MB, 'cuda' | 'rss'), filled by evaluate()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Evaluate configs and tabulate mIoU.')
    p.add_argument('--configs', nargs='+', required=True, help='config files')
    p.add_argument('--fit-missing', action='store_true',
                   help='fit missing GPUA artifacts first (tools/fit_alignment.py)')
    p.add_argument('--out', default='work_dirs/eval_all.md',
                   help='markdown table path; the CSV goes beside it (.csv)')
    p.add_argument('--work-dir', default='work_dirs/eval_all', help='per-config logs')
    p.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                   help='passed to every test.py / fit_alignment.py run')
    p.add_argument('--gpua-cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                   help='passed (after --cfg-options) only to configs with a model.vfm, e.g. '
                        'model.vfm.pretrained=/path/dinov3.pth')
    p.add_argument('--fit-args', nargs=argparse.REMAINDER, default=[],
                   help='extra arguments for fit_alignment.py (must come last)')
    return p.parse_args(argv)


def split_name(config: str):
    """``configs/x/gpua_scclip_dinov3_vitb16_coco_object.py`` -> (method, key)."""
    stem = osp.splitext(osp.basename(config))[0]
    for key in sorted(KEYS, key=len, reverse=True):
        if stem.endswith('_' + key):
            return stem[:-len(key) - 1], key
    return stem, 'other'


def _merge(cfg, options):
    from mmengine.config import DictAction
    if options:
        p = argparse.ArgumentParser()
        p.add_argument('--o', nargs='+', action=DictAction)
        cfg.merge_from_dict(p.parse_args(['--o'] + list(options)).o)


def resolve(config: str, args):
    """``(options for this config, GPUA artifact path or None)``."""
    import gpua_mmseg.models  # noqa: F401  (mmcv-lite placeholder)
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    options = list(args.cfg_options)
    if cfg.model.get('vfm'):
        options += list(args.gpua_cfg_options)
    _merge(cfg, options)
    head = cfg.model.get('decode_head') or {}
    return options, head.get('alignment_path')


def _call(cmd, log_path):
    r = subprocess.run(cmd, capture_output=True, text=True)
    os.makedirs(osp.dirname(log_path), exist_ok=True)
    with open(log_path, 'w', encoding='utf-8') as f:
        f.write(' '.join(cmd) + '\n\n' + r.stdout + '\n--- stderr ---\n' + r.stderr)
    return r


def evaluate(config: str, args):
    """mIoU (float) of one config, or an error string."""
    stem = osp.splitext(osp.basename(config))[0]
    logs = osp.join(args.work_dir, stem)
    try:
        options, art = resolve(config, args)
    except Exception as e:  # mmengine raises many types for a bad config / option
        return f'bad config or options: {e}'
    opts = ['--cfg-options'] + options if options else []
    if art is not None and not osp.isfile(art):
        if not args.fit_missing:
            return f'missing artifact {art} (use --fit-missing)'
        r = _call([sys.executable, osp.join(HERE, 'fit_alignment.py'), config]
                  + list(args.fit_args) + opts, osp.join(logs, 'fit.log'))
        if r.returncode != 0:
            return f'fit failed (see {osp.join(logs, "fit.log")})'
    r = _call([sys.executable, osp.join(HERE, 'test.py'), config, '--work-dir', logs] + opts,
              osp.join(logs, 'test.log'))
    m = _MIOU.search(r.stdout)
    if r.returncode != 0 or not m:
        return f'test failed (see {osp.join(logs, "test.log")})'
    sp = _SPEED.search(r.stdout)
    if sp:
        SPEED[config] = (float(sp.group(1)), float(sp.group(2)), sp.group(3))
    return float(m.group(1))


def speed_table(speeds):
    """{(method, key): (img/s, peak MB, kind)} -> markdown: per method the mean img/s and the
    max peak memory over its benchmarks (empty string without measurements)."""
    if not speeds:
        return ''
    per = {}
    for (method, _), v in speeds.items():
        per.setdefault(method, []).append(v)
    md = ['| method | img/s (mean over benchmarks) | peak memory (MB) | memory kind |',
          '|---|---|---|---|']
    for method, vs in per.items():
        md.append(f'| {method} | {sum(v[0] for v in vs) / len(vs):.3f} | '
                  f'{max(v[1] for v in vs):.0f} | {vs[0][2]} |')
    return '\n'.join(md) + '\n'


def tables(results):
    """{(method, key): mIoU | error} -> (markdown, csv) text."""
    methods = list(dict.fromkeys(m for m, _ in results))
    keys = [k for k in KEYS if any(k == kk for _, kk in results)]
    keys += sorted({k for _, k in results} - set(keys))

    def cell(v):
        return '' if v is None else (f'{v:.2f}' if isinstance(v, float) else 'fail')
    md = ['| method | ' + ' | '.join(keys) + ' | mean |', '|---' * (len(keys) + 2) + '|']
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator='\n')
    w.writerow(['method'] + keys + ['mean'])
    for m in methods:
        vals = [results.get((m, k)) for k in keys]
        nums = [v for v in vals if isinstance(v, float)]
        # the mean only over a complete row: a partial mean would not be comparable
        mean = sum(nums) / len(nums) if nums and len(nums) == len(vals) else None
        md.append(f'| {m} | ' + ' | '.join(cell(v) for v in vals) + f' | {cell(mean)} |')
        w.writerow([m] + [cell(v) for v in vals] + [cell(mean)])
    return '\n'.join(md) + '\n', buf.getvalue()


def main(argv=None):
    args = parse_args(argv)
    missing = [c for c in args.configs if not osp.isfile(c)]
    if missing:
        print(f'error: config file(s) not found: {missing}', file=sys.stderr)
        return 2
    results, failed = {}, False
    for config in args.configs:
        res = evaluate(config, args)
        results[split_name(config)] = res
        failed |= not isinstance(res, float)
        print(f'{config}: {res if isinstance(res, str) else f"mIoU={res:.2f}"}', flush=True)
    md, csv_text = tables(results)
    speed = speed_table({split_name(c): v for c, v in SPEED.items()})
    if speed:  # speed and peak memory beside the mIoU table (same file, its own table)
        md += '\nSpeed (tools/test.py test loop, batch 1) and peak memory:\n\n' + speed
    # Complete files or none, with the mode a plain open() gives under the umask.
    atomic_write_text(args.out, md)
    atomic_write_text(osp.splitext(args.out)[0] + '.csv', csv_text)
    print(md)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
