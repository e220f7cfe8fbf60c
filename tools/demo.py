"""Open-vocabulary segmentation demo: images in, overlay pictures (with legend) + label maps out.

Examples::

    python tools/demo.py photo.jpg --classes "cat, kitty; sofa; person, man, woman; background"
    python tools/demo.py photos/ --config scclip --out results/
    python tools/demo.py --samples                    # scikit-image's bundled photos
    python tools/demo.py photos/ --config gpua_scclip --classes "..." --fit
    python tools/demo.py --samples --weights random   # pipeline check, meaningless pictures

Per image ``<name>_overlay.png`` (photo + colours + legend) and ``<name>_labels.png`` (raw class
indices, 8-bit, or 16-bit beyond 256 classes) are written atomically to ``--out``.  The text
classifier is encoded once for the whole run.  Weights are looked up locally first (see
docs/USAGE.md, "Offline weights"); offline without local files the demo exits with code 2 at once.
"""
import argparse
import os.path as osp
import sys
import time

SAMPLES = ('astronaut', 'chelsea', 'coffee', 'rocket', 'camera', 'coins')
SAMPLE_CLASSES = ('background; person, astronaut, man; cat, kitten; cup, mug, coffee; rocket; '
                  'sky; tree; building; grass; coin')
USER_DEFAULT_CLASSES = 'background; person; cat; dog; car; tree; sky; building'
EXIT_NO_WEIGHTS = 2
EXIT_BAD_INPUT = 2  # bad vocabulary, config, artifact or --fit-options

RANDOM_BANNER = '\n'.join([
    '#' * 78,
    '#  --weights random: ALL ENCODERS HAVE RANDOM WEIGHTS.                       #',
    '#  The pictures and label maps written by this run are MEANINGLESS; use it   #',
    '#  only to check that the pipeline runs. See docs/USAGE.md for real weights. #',
    '#' * 78])


def parse_args(argv=None):
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('inputs', nargs='*', help='image files and/or folders (none: --samples)')
    p.add_argument('--classes', default=None,
                   help='vocabulary: ";" between classes, "," between synonyms, e.g. '
                        '"cat, kitty; sofa; person, man, woman; background" (a class named '
                        '"background" catches low-confidence pixels)')
    p.add_argument('--config', default='sclip',
                   help='short name (sclip | scclip | gpua_scclip | any folder under configs/) '
                        'or a config file')
    p.add_argument('--out', default='demo_out', help='output folder (created)')
    p.add_argument('--weights', choices=['random'], default=None,
                   help='"random": random weights, pipeline check only (pictures meaningless)')
    p.add_argument('--clip-weights', default=None, help='local CLIP checkpoint file')
    p.add_argument('--vfm-weights', default=None, help='local DINOv3 checkpoint file (GPUA)')
    p.add_argument('--alignment', default=None, help='GPUA artifact file (GPUA configs)')
    p.add_argument('--fit', action='store_true',
                   help='GPUA configs: if no artifact matches the vocabulary, fit one on the '
                        'given images first (unsupervised)')
    p.add_argument('--fit-options', nargs='+', action=DictAction, default=None,
                   metavar='KEY=VALUE', help='GPUAConfig overrides for --fit, e.g. '
                                             'refine_steps=100 (see gpua_mmseg.alignment.gpua)')
    p.add_argument('--device', default=None, help='torch device (default: cuda if available)')
    p.add_argument('--alpha', type=float, default=0.5, help='overlay opacity in [0, 1]')
    p.add_argument('--samples', action='store_true',
                   help=f"segment scikit-image's sample photos ({', '.join(SAMPLES)})")
    p.add_argument('--cfg-options', nargs='+', action=DictAction, default=None,
                   help='config overrides key=value, e.g. model.slide_stride=224')
    args = p.parse_args(argv)
    if not 0.0 <= args.alpha <= 1.0:
        p.error(f'--alpha must be in [0, 1], got {args.alpha}')
    if args.weights == 'random' and (args.clip_weights or args.vfm_weights):
        p.error('--weights random and --clip-weights/--vfm-weights exclude each other')
    return args


def _sample_images():
    """(name, uint8 RGB array) for scikit-image's bundled photos (no download)."""
    import numpy as np
    import skimage.data
    out = []
    for name in SAMPLES:
        img = getattr(skimage.data, name)()
        out.append((name, np.repeat(img[..., None], 3, -1) if img.ndim == 2 else img))
    return out


def _weights_arg(args):
    if args.weights == 'random':
        return 'random'
    w = {k: v for k, v in (('clip', args.clip_weights), ('vfm', args.vfm_weights)) if v}
    return w or None


def _prepare_gpua(seg, args, items):
    """Attach a GPUA head that matches the model and the vocabulary: the config's (or
    ``--alignment``) artifact, a cached demo fit with the same identity, or (``--fit``) a
    fresh fit on ``items``.  With ``--fit`` a mismatching artifact is never fatal."""
    from gpua_mmseg.apis.fit import (default_alignment_path, fit_alignment_on_images,
                                     install_alignment)
    if seg.head_cfg is None or (seg.is_gpua and seg.gpua_vocabulary_matches()):
        return
    if not args.fit:
        print('WARNING: the GPUA artifact was fitted for another vocabulary; add --fit to fit '
              'one for this vocabulary on the given images.', file=sys.stderr)
        return
    if seg.alignment_problem:
        print(f'note: {seg.alignment_problem.splitlines()[0]}')
    cached = default_alignment_path(seg)
    if osp.isfile(cached):
        try:
            install_alignment(seg, cached)
            print(f'using the GPUA artifact fitted earlier for these encoders and this '
                  f'vocabulary: {cached}')
            return
        except ValueError as e:  # corrupt or foreign: refit over it
            print(f'WARNING: ignoring the cached GPUA artifact ({str(e).splitlines()[0]}); '
                  'refitting', file=sys.stderr)
    print(f'fitting a GPUA map on {len(items)} images for this vocabulary ...')
    t0 = time.perf_counter()
    path = fit_alignment_on_images(seg, [img for _, img in items], cached,
                                  config=args.fit_options)
    print(f'fitted in {time.perf_counter() - t0:.1f} s -> {path}')


def run(args) -> int:
    from gpua_mmseg.apis import list_images, preflight_weights
    from gpua_mmseg.weights import WeightsNotFoundError

    use_samples = args.samples or not args.inputs
    if not use_samples:
        items = [(osp.splitext(osp.basename(p))[0], p) for p in list_images(args.inputs)]
        if not items:
            print(f'no images found in {args.inputs}', file=sys.stderr)
            return EXIT_BAD_INPUT
    classes = args.classes if args.classes is not None else (
        SAMPLE_CLASSES if use_samples else USER_DEFAULT_CLASSES)  # --classes "" is an error
    if args.weights == 'random':
        print(RANDOM_BANNER, flush=True)
        print(RANDOM_BANNER, file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    try:
        # Before torch / open_clip are even imported: offline without files fails in ~1 s.
        weights = preflight_weights(args.config, _weights_arg(args), args.cfg_options)
    except WeightsNotFoundError as e:
        print(f'ERROR: {e}', file=sys.stderr)
        return EXIT_NO_WEIGHTS
    from gpua_mmseg.apis import OpenVocabSegmenter, atomic_save
    if use_samples:
        items = _sample_images()
    try:
        seg = OpenVocabSegmenter(args.config, classes=classes, device=args.device,
                                 weights=weights, cfg_options=args.cfg_options,
                                 alignment=args.alignment, require_alignment=not args.fit)
    except (FileNotFoundError, ValueError) as e:  # missing artifact / bad vocabulary or config
        print(f'ERROR: {e}', file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        _prepare_gpua(seg, args, items)
    except (FileNotFoundError, ValueError) as e:  # bad --fit-options, too few images, ...
        print(f'ERROR: {e}', file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f'model ready in {time.perf_counter() - t0:.1f} s ({seg.config_path}, device '
          f'{seg.device}); {len(seg.classes)} classes: {", ".join(seg.names)}', flush=True)

    seg.model.get_text_embeddings()  # the one text encoding of the run
    t1 = time.perf_counter()
    for i, (name, img) in enumerate(items):
        res = seg(img)
        atomic_save(res.overlay(alpha=args.alpha), osp.join(args.out, f'{name}_overlay.png'))
        atomic_save(res.label_image(), osp.join(args.out, f'{name}_labels.png'))
        shares = sorted(((float((res.labels == c).mean()), n) for c, n in enumerate(res.names)),
                        reverse=True)
        top = ', '.join(f'{n} {100 * f:.0f}%' for f, n in shares[:3] if f > 0)
        print(f'[{i + 1}/{len(items)}] {name}: {res.seconds:.2f} s ({top})', flush=True)
    dt = time.perf_counter() - t1
    print(f'{len(items)} images in {dt:.2f} s: {len(items) / max(dt, 1e-9):.2f} images/s '
          f'(files written to {osp.abspath(args.out)})')
    if args.weights == 'random':
        print('REMINDER: random weights, the pictures are meaningless.')
    return 0


def main(argv=None) -> int:
    return run(parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
