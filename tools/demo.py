"""Open-vocabulary segmentation demo: images in, overlay pictures (with legend) + label maps out.

Examples::

    python tools/demo.py photo.jpg --classes "cat, kitty; sofa; person, man, woman; background"
    python tools/demo.py photos/ --config scclip --out results/
    python tools/demo.py --samples                    # scikit-image's bundled photos
    python tools/demo.py photos/ --config gpua_scclip --classes "..." --fit
    python tools/demo.py --samples --weights random   # pipeline check, meaningless pictures

Per image ``<name>_overlay.png`` (photo + colours + legend) and ``<name>_labels.png`` (raw class
indices, 8-bit, or 16-bit beyond 256 classes) are written atomically to ``--out``.  ``<name>`` is
the file name without extension; inputs whose names collide (``x.jpg`` and ``x.png``) keep the
extension (``x_jpg``, ``x_png``), and what still collides gets ``_2``, ``_3`` ...  The text
classifier is encoded once for the whole run.  Weights are looked up locally first (see
docs/USAGE.md, "Offline weights"); offline without local files the demo exits with code 2 at once.

Images are read as viewers show them (EXIF orientation applied; 16-bit grey scaled to 8 bits).
An unreadable image (empty, truncated, not an image, a symlink loop) is reported on one line and
skipped; the others are still segmented.

Exit status: 0 every image segmented; 2 bad input (vocabulary, config, weights, artifact,
``--fit-options``, an unwritable / full ``--out``, or at least one unreadable image, reported
and skipped).
"""
import argparse
import os
import os.path as osp
import sys
import tempfile
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


def _check_out_dir(out: str):
    """None if ``out`` is (or can be made) a writable folder, else the one-line problem.

    Nothing is left behind: a missing ``out`` is created by the first picture written, so a
    run refused later (bad weights, artifact) leaves no empty folder."""
    out = osp.abspath(out)
    probe_in = out
    while not osp.exists(probe_in):  # the nearest existing ancestor must accept a folder
        probe_in = osp.dirname(probe_in)
    if not osp.isdir(probe_in):
        return f'--out {out}: {probe_in} is a file, not a folder; choose a folder with --out'
    try:
        # pid-named probe: the atomic writer's stale-file sweep removes it after a kill -9
        probe = tempfile.mkdtemp(prefix=f'.write_probe.{os.getpid()}.', suffix='.tmp',
                                 dir=probe_in)
        os.rmdir(probe)
    except OSError as e:
        return (f'--out {out} is not writable ({e.strerror or e}); choose a writable folder '
                'with --out')
    return None


def _write_error(path: str, e: OSError) -> str:
    import errno
    fix = ('free disk space or choose another --out' if e.errno in (errno.ENOSPC, errno.EDQUOT)
           else 'choose a writable folder with --out')
    return f'cannot write {path} ({e.strerror or e}); {fix}'


def _fit_options(args):
    """``--fit-options`` checked before any model is built or feature extracted."""
    if args.fit_options is None:
        return None
    from gpua_mmseg.apis.fit import gpua_config_from_options
    gpua_config_from_options(args.fit_options)  # raises ValueError naming the bad field
    if not args.fit:
        print('WARNING: --fit-options only apply with --fit; ignored', file=sys.stderr)
    return dict(args.fit_options)


def _readable(items, skipped):
    """Yield ``(name, rgb)`` of ``items``, reporting and skipping unreadable files."""
    from gpua_mmseg.apis.io import UnreadableImageError, load_image
    for name, img in items:
        if isinstance(img, str) and img in skipped:
            continue
        try:
            yield name, load_image(img)
        except (UnreadableImageError, FileNotFoundError) as e:
            print(f'WARNING: skipped: {e}', file=sys.stderr)
            skipped.append(img)


def _prepare_gpua(seg, args, items, skipped):
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
    print(f'fitting a GPUA map on {len(items) - len(skipped)} images for this vocabulary ...')
    t0 = time.perf_counter()
    kept = []   # the fit's encoder outputs: the same images are then segmented from them
    path = fit_alignment_on_images(seg, (img for _, img in _readable(items, skipped)), cached,
                                   config=args.fit_options, keep_features=kept)
    dt = time.perf_counter() - t0
    ext = float(seg.model.decode_head.meta.get('extract_seconds', 0.0))
    print(f'fitted in {dt:.1f} s (feature extraction {ext:.1f} s, fit {dt - ext:.1f} s) -> '
          f'{path}')
    return kept


def _save_outputs(res, name, args):
    """Both pictures of one image, or neither (a failed second write removes the first).

    Raises:
        OSError: naming the target file (not the writer's temporary file).
    """
    from gpua_mmseg.apis import atomic_save

    def save(image, path):
        try:
            atomic_save(image, path)
        except OSError as e:
            raise OSError(e.errno, e.strerror or str(e), path) from e
    overlay = osp.join(args.out, f'{name}_overlay.png')
    save(res.overlay(alpha=args.alpha), overlay)
    try:
        save(res.label_image(), osp.join(args.out, f'{name}_labels.png'))
    except BaseException:
        try:
            os.remove(overlay)
        except OSError:
            pass
        raise


def _error(msg) -> int:
    print(f'ERROR: {msg}', file=sys.stderr)
    return EXIT_BAD_INPUT


def run(args) -> int:
    from gpua_mmseg.apis import list_images, preflight_weights
    from gpua_mmseg.apis.io import check_image_file, output_stems
    from gpua_mmseg.vocabulary import Vocabulary
    from gpua_mmseg.weights import WeightsNotFoundError

    t_start = time.perf_counter()
    # Everything checkable without a model is checked first (seconds, not a model build).
    use_samples = args.samples or not args.inputs
    skipped = []
    if not use_samples:
        try:
            paths = list_images(args.inputs)
        except FileNotFoundError as e:
            return _error(e)
        if not paths:
            return _error(f'no images found in {args.inputs} (extensions: '
                          '.jpg .jpeg .png .bmp .tif .tiff .webp)')
        items = list(zip(output_stems(paths), paths))
        for _, p in items:
            try:
                check_image_file(p)
            except (ValueError, FileNotFoundError) as e:
                print(f'WARNING: skipped: {e}', file=sys.stderr)
                skipped.append(p)
        if len(skipped) == len(items):
            return _error(f'none of the {len(items)} input image(s) can be read (see above)')
        if len(set(osp.splitext(osp.basename(p))[0] for p in paths)) < len(paths):
            print('note: some inputs share a file name stem; their outputs keep the extension '
                  '(e.g. x_jpg_overlay.png, x_png_overlay.png)')
    classes = args.classes if args.classes is not None else (
        SAMPLE_CLASSES if use_samples else USER_DEFAULT_CLASSES)  # --classes "" is an error
    try:
        Vocabulary.parse(classes)
    except ValueError as e:
        return _error(f'--classes: {e}')
    problem = _check_out_dir(args.out)
    if problem:
        return _error(problem)
    try:
        args.fit_options = _fit_options(args)
    except ValueError as e:
        return _error(e)
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
    except (FileNotFoundError, ValueError) as e:
        return _error(e)
    from gpua_mmseg.apis import OpenVocabSegmenter
    if use_samples:
        items = _sample_images()
    try:
        seg = OpenVocabSegmenter(args.config, classes=classes, device=args.device,
                                 weights=weights, cfg_options=args.cfg_options,
                                 alignment=args.alignment, require_alignment=not args.fit)
    except (FileNotFoundError, ValueError) as e:  # missing artifact / bad vocabulary or config
        return _error(e)
    try:
        reuse = _prepare_gpua(seg, args, items, skipped) or []
    except (FileNotFoundError, ValueError) as e:  # too few images / patches, ...
        return _error(e)
    except OSError as e:  # the artifact could not be written (disk full, read-only cache)
        return _error(_write_error(getattr(e, 'filename', None) or 'the GPUA artifact', e))
    print(f'model ready in {time.perf_counter() - t0:.1f} s ({seg.config_path}, device '
          f'{seg.device}); {len(seg.classes)} classes: {", ".join(seg.names)}', flush=True)

    seg.model.get_text_embeddings()  # the one text encoding of the run
    t1 = time.perf_counter()
    done, total = 0, len(items) - len(skipped)
    for i, (name, img) in enumerate(_readable(items, skipped)):
        # the i-th readable image is the fit's i-th: no second pass through the encoders
        res = seg(img, features=reuse[i] if i < len(reuse) else None)
        try:
            _save_outputs(res, name, args)
        except OSError as e:  # disk full, folder gone read-only: stop, nothing half-written
            return _error(_write_error(e.filename or osp.join(args.out, name + '_*.png'), e))
        done += 1
        shares = sorted(((float((res.labels == c).mean()), n) for c, n in enumerate(res.names)),
                        reverse=True)
        top = ', '.join(f'{n} {100 * f:.0f}%' for f, n in shares[:3] if f > 0)
        first = (f'; first image {time.perf_counter() - t_start:.1f} s after start'
                 if done == 1 else '')
        print(f'[{i + 1}/{total}] {name}: {res.seconds:.2f} s ({top}){first}', flush=True)
    dt = time.perf_counter() - t1
    print(f'{done} images in {dt:.2f} s: {done / max(dt, 1e-9):.2f} images/s '
          f'(files written to {osp.abspath(args.out)})')
    if args.weights == 'random':
        print('REMINDER: random weights, the pictures are meaningless.')
    if skipped:
        print(f'ERROR: {len(skipped)} of {len(items)} images could not be read and were '
              f'skipped: {", ".join(skipped)}', file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def main(argv=None) -> int:
    return run(parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
