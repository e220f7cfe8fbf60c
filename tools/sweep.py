"""Sweep the GPUA fusion weight λ (and optionally prob_thd) with every image encoded once.

    python tools/sweep.py configs/gpua/gpua_scclip_dinov3_vitb16_voc21.py \\
        --fusion-weight 0 0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8 0.9 1 --prob-thd 0.1 0.15 0.2

Fusion is linear and happens before stitching, resizing and post-processing, so per image the
CLIP logits ``c`` and the GPUA logits ``g`` are computed once (one pass of the sliding window
through both encoders; ``[2Q, H, W]`` at the working resolution, resized once to the original
size) and every setting is scored from ``λ·c + (1−λ)·g``: softmax / synonym max per λ, then the labels per prob_thd, each fed to its
own MMSeg ``IoUMetric``.  Only the current image's logits are alive (memory bounded by one image,
nothing written to disk but the results).  A CLIP-only config sweeps prob_thd alone.

Writes ``<out>.md`` / ``<out>.csv`` (one row per setting: λ, prob_thd, mIoU, aAcc, mAcc) and
``<out>.png`` (mIoU against λ, one curve per prob_thd), and prints its timing next to the
estimated time of plain ``tools/test.py`` runs (same encoding + one post-processing each).
Exit status 2 for bad input (one line on stderr), as tools/test.py.
"""
import argparse
import csv
import io
import os.path as osp
import sys
import time

EXIT_OK, EXIT_BAD_INPUT = 0, 2
DEFAULT_LAMBDAS = [round(0.1 * i, 1) for i in range(11)]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='λ / prob_thd sweep, every image encoded once.')
    p.add_argument('config', help='a GPUA config (configs/gpua/...) or a CLIP-only one')
    p.add_argument('--fusion-weight', type=float, nargs='+', default=None, metavar='LAMBDA',
                   help='λ values in [0, 1] (default 0 0.1 ... 1; CLIP-only configs: 1)')
    p.add_argument('--prob-thd', type=float, nargs='+', default=None, metavar='T',
                   help='prob_thd values in [0, 1] (default: the config\'s)')
    p.add_argument('--out', default=None,
                   help='output stem (default work_dirs/sweep/<config name>); .md .csv .png')
    p.add_argument('--max-images', type=int, default=None, help='only the first N images')
    p.add_argument('--cfg-options', nargs='+', metavar='KEY=VALUE', default=[],
                   help='override config entries, as in tools/test.py')
    args = p.parse_args(argv)
    for name, vals in (('--fusion-weight', args.fusion_weight), ('--prob-thd', args.prob_thd)):
        if vals is not None and any(not 0.0 <= v <= 1.0 for v in vals):
            p.error(f'{name} values must lie in [0, 1], got {vals}')
    if args.max_images is not None and args.max_images < 1:
        p.error(f'--max-images must be >= 1, got {args.max_images}')
    return args


def build(args):
    import gpua_mmseg.models  # noqa: F401  (first: mmcv-lite placeholder before mmseg)
    import gpua_mmseg.datasets  # noqa: F401,I001
    from mmengine.config import Config, DictAction
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner
    from mmseg.registry import MODELS
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        p = argparse.ArgumentParser()
        p.add_argument('--o', nargs='+', action=DictAction)
        cfg.merge_from_dict(p.parse_args(['--o'] + list(args.cfg_options)).o)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    # as the Runner does before building the model (random-init encoders depend on it)
    from mmengine.runner.utils import set_random_seed
    rnd = dict(cfg.get('randomness') or {})
    set_random_seed(rnd.get('seed'), rnd.get('deterministic', False),
                    rnd.get('diff_rank_seed', False))
    model = MODELS.build(cfg.model).eval()
    loader = Runner.build_dataloader(cfg.test_dataloader)
    return cfg, model, loader


def _metric(cfg, dataset_meta):
    from mmseg.registry import METRICS
    m = METRICS.build(dict(cfg.test_evaluator))
    m.dataset_meta = dataset_meta
    return m


def sweep(cfg, model, loader, lambdas, thds, max_images=None):
    """Returns (rows [dict(fusion_weight, prob_thd, mIoU, aAcc, mAcc)], timing dict)."""
    import torch
    from gpua_mmseg.models.postprocess import fits_full_resolution, predict_labels
    from mmengine.structures import PixelData
    head = model.decode_head
    if head is None and lambdas != [1.0]:
        raise ValueError(f'{cfg.filename} has no GPUA head (CLIP-only): --fusion-weight must be '
                         '1 (or omitted)')
    prob_cfg, bg = model.prob_thd, model.bg_idx
    if bg is None and any(t > 0 for t in thds):
        raise ValueError('prob_thd > 0 needs a background class; this vocabulary has none')
    meta = loader.dataset.metainfo
    metrics = {(lam, t): _metric(cfg, meta) for lam in lambdas for t in thds}

    def parts(crops01, vfm_tokens):  # [n, 2Q, h, w]: CLIP logits, then GPUA logits
        c, g = model.crop_logit_parts(crops01, vfm_tokens)
        return torch.cat([c, torch.zeros_like(c) if g is None else g], 1)

    # the GPUA logits are needed for every λ < 1, whatever the config's own λ (at λ = 1 the
    # head skips the VFM): encode with the head at λ = 0, and mix per setting below
    lam_cfg = None if head is None else head.fusion_weight
    t_encode = t_post = 0.0
    n = 0
    with torch.no_grad():
        for batch in loader:
            t0 = time.perf_counter()
            data = model.data_preprocessor(batch, False)
            samples = data['data_samples']
            metas = [s.metainfo for s in samples]
            images = model._valid_images(data['inputs'], metas)
            if head is not None and min(lambdas) < 1.0:
                head.fusion_weight = 0.0
            try:
                # inference's own sliding window and VFM window (VFMWindowTokens): one code path
                # (lazy tokens: with overlap_encoders on CUDA the VFM runs beside CLIP)
                both = model.slide_crops(images, parts, lazy_tokens=True)
            finally:
                if head is not None:
                    head.fusion_weight = lam_cfg
            t1 = time.perf_counter()
            t_encode += t1 - t0
            for img, lg, meta_i, sample in zip(images, both, metas, samples):
                q = lg.shape[0] // 2
                ori = tuple(meta_i.get('ori_shape', lg.shape[-2:])[:2])
                full = fits_full_resolution(model.num_classes, ori)
                if full and tuple(lg.shape[-2:]) != ori:
                    # resizing is linear: resize both parts once, not every fused map
                    lg = torch.nn.functional.interpolate(lg[None], size=ori, mode='bilinear',
                                                         align_corners=False)[0]
                c, g = lg[:q], lg[q:]
                gt = sample.gt_sem_seg.data
                for lam in lambdas:
                    fused = c if head is None else head.mix(c, g, lam)  # the plain run's formula
                    scores = model.class_scores(img, fused, meta_i) if full else None
                    for t in thds:
                        if full:
                            labels = predict_labels(scores[None], t, model.area_thd, bg)[0]
                        else:  # huge output: the bounded path of the plain run
                            model.prob_thd = t
                            labels = model.postprocess_one(img, fused, meta_i)[1]
                            model.prob_thd = prob_cfg
                        metrics[(lam, t)].process(None, [dict(
                            pred_sem_seg=dict(data=labels[None]), gt_sem_seg=dict(data=gt))])
            t_post += time.perf_counter() - t1
            n += len(samples)
            if max_images is not None and n >= max_images:
                break
    rows = []
    for (lam, t), m in metrics.items():
        res = m.compute_metrics(m.results)
        rows.append(dict(fusion_weight=lam, prob_thd=t, **{k: float(v) for k, v in res.items()}))
    settings = len(metrics)
    # a plain run = the same encoding + one setting's post-processing
    plain = t_encode + t_post / settings
    return rows, dict(images=n, settings=settings, encode_s=t_encode, post_s=t_post,
                      sweep_s=t_encode + t_post, plain_run_s=plain)


def format_timing(timing) -> str:
    """One line: the encoding (once), the evaluation per setting, and a plain run's estimate."""
    per = timing['post_s'] / max(timing['settings'], 1)
    return (f'timing: {timing["settings"]} settings on {timing["images"]} images in '
            f'{timing["sweep_s"]:.2f} s (encode once {timing["encode_s"]:.2f} s, '
            f'{per:.3f} s per setting); one plain run ~ {timing["plain_run_s"]:.2f} s of the '
            f'same work, {timing["settings"]} plain runs ~ '
            f'{timing["plain_run_s"] * timing["settings"]:.2f} s (sweep = '
            f'{timing["sweep_s"] / max(timing["plain_run_s"], 1e-9):.2f} plain runs; without '
            'start-up, which a plain run pays again)')


def write_outputs(stem, rows, lambdas, thds, config):
    from gpua_mmseg.utils.atomic import atomic_write, atomic_write_text
    keys = ['fusion_weight', 'prob_thd'] + [k for k in rows[0] if k not in ('fusion_weight',
                                                                          'prob_thd')]
    md = [f'# Sweep of {config}', '', '| ' + ' | '.join(keys) + ' |',
          '|' + '---|' * len(keys)]
    for r in rows:
        md.append('| ' + ' | '.join(f'{r[k]:.2f}' if isinstance(r[k], float) else str(r[k])
                                    for k in keys) + ' |')
    atomic_write_text(stem + '.md', '\n'.join(md) + '\n')
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(stem + '.csv', buf.getvalue())
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for t in thds:
        pts = sorted((r['fusion_weight'], r['mIoU']) for r in rows if r['prob_thd'] == t)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker='o', label=f'prob_thd={t:g}')
    ax.set_xlabel('λ (weight of the CLIP logits)')
    ax.set_ylabel('mIoU (%)')
    ax.set_title(osp.basename(config), fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(stem + '.png', lambda tmp: fig.savefig(tmp, format='png', dpi=120))
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    if not osp.isfile(args.config):
        print(f'error: config file {args.config!r} does not exist', file=sys.stderr)
        return EXIT_BAD_INPUT
    stem = args.out or osp.join('work_dirs', 'sweep',
                                osp.splitext(osp.basename(args.config))[0])
    try:
        import os
        os.makedirs(osp.dirname(osp.abspath(stem)), exist_ok=True)
        cfg, model, loader = build(args)
        has_gpua = model.decode_head is not None
        lambdas = args.fusion_weight or (DEFAULT_LAMBDAS if has_gpua else [1.0])
        lambdas = sorted({float(v) for v in lambdas})
        thds = sorted({float(v) for v in (args.prob_thd or [model.prob_thd])})
        rows, timing = sweep(cfg, model, loader, lambdas, thds, args.max_images)
        write_outputs(stem, rows, lambdas, thds, args.config)
    except (OSError, ValueError, KeyError) as e:
        print(f'error: {e}', file=sys.stderr)
        return EXIT_BAD_INPUT
    best = max(rows, key=lambda r: r['mIoU'])
    print(f'best: fusion_weight={best["fusion_weight"]:g} prob_thd={best["prob_thd"]:g} '
          f'mIoU={best["mIoU"]:.2f}')
    print(format_timing(timing))
    print(f'wrote {stem}.md {stem}.csv {stem}.png')
    return EXIT_OK


if __name__ == '__main__':
    sys.exit(main())
