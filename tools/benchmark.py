"""Throughput of GPUASegmentor.predict: crop-by-crop (crop_batch_size=1) vs batched crops.

For every last-block variant the same images go through the same CLIP weights twice, once with
``crop_batch_size=1`` (how the reference SCLIP / SC-CLIP code runs) and once batched, side by side
in one run, and a markdown table with images/s and the speed-up is printed.  Weights are random
(ViT-B/16 by default; ``--tiny`` for a seconds-long smoke run): speed does not depend on them.

    python tools/benchmark.py --device cuda --size 336 448 --n-images 20
    python tools/benchmark.py --tiny --n-images 2
    python tools/benchmark.py --memory        # peak RSS, 8000 x 8000 image, 21 / 150 classes
    python tools/benchmark.py --side-by-side  # issue 13: crop by crop / batched / GPUA / ProxyCLIP
    python tools/benchmark.py --text          # text classifier: full-context vs short forward
    python tools/benchmark.py --sweep         # issue 12: one plain tools/test.py run vs the
                                              # 11-value λ sweep (tools/sweep.py), same data

Adding a row type (e.g. GPUA fused vs baseline): write ``def my_cases(args, shared) ->
list[Case]`` and append it to ``CASE_BUILDERS``; each :class:`Case` is a name plus a ready
segmentor, and every case is timed with both crop-batch settings.
"""
import argparse
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch

import gpua_mmseg.models  # noqa: F401  (mmcv-lite placeholder before mmseg)
from gpua_mmseg.models.clip import CLIPEncoder, list_last_blocks, tiny_clip_model_cfg
from gpua_mmseg.models.segmentor import GPUASegmentor
from mmseg.structures import SegDataSample

VARIANTS = ('vanilla', 'maskclip', 'sclip', 'clearclip', 'naclip', 'scclip')
# The tiny CLIP has 3 blocks: SC-CLIP's ViT-B/16 layer indices do not exist there.
TINY_MODE_CFG = dict(scclip=dict(pre_adjust_idx=1, post_adjust_idx=0, multi_start_idx=0,
                                 multi_end_idx=2, lof_k=5))


@dataclass
class Case:
    """One table row: ``name`` and a segmentor already on the target device."""
    name: str
    segmentor: GPUASegmentor
    group: str = 'clip'


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--tiny', action='store_true', help='tiny random CLIP (smoke run)')
    p.add_argument('--clip', default='ViT-B-16', help='open_clip model name (random init)')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--size', type=int, nargs=2, default=(336, 448), metavar=('H', 'W'),
                   help='input image size in pixels (after the test-time resize)')
    p.add_argument('--n-images', type=int, default=10, help='timed images per case')
    p.add_argument('--warmup', type=int, default=1, help='untimed images per case')
    p.add_argument('--crop-batch-size', type=int, default=32, help='the batched setting')
    p.add_argument('--crop', type=int, default=224)
    p.add_argument('--stride', type=int, default=112)
    p.add_argument('--variants', nargs='+', default=list(VARIANTS))
    p.add_argument('--class-names', default='voc21')
    p.add_argument('--templates', type=int, default=1,
                   help='number of prompt templates (text encoding is cached, not timed)')
    p.add_argument('--autocast', choices=('none', 'fp16', 'bf16'), default='none')
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--memory', action='store_true',
                   help='instead of speed: peak RSS of predict() for one huge original image '
                        '(--memory-size) per vocabulary (--memory-classes), each in a fresh '
                        'process; tiny random CLIP, CPU')
    p.add_argument('--memory-size', type=int, nargs=2, default=(8000, 8000), metavar=('H', 'W'),
                   help='original image size (ori_shape) for --memory')
    p.add_argument('--memory-classes', nargs='+', default=['voc21', 'ade20k'],
                   help='class-name keys for --memory (voc21: 21 classes, ade20k: 150)')
    p.add_argument('--memory-out', default=None,
                   help='also write the --memory table (markdown) to this file')
    p.add_argument('--memory-child', nargs=3, metavar=('CLASSES', 'H', 'W'),
                   help=argparse.SUPPRESS)
    p.add_argument('--side-by-side', action='store_true',
                   help='instead of the per-variant table: one table, all rows timed image by '
                        'image in turn: SCLIP crop by crop (as the public reference code runs), '
                        'SCLIP batched (our baseline), SCLIP + GPUA (per vfm_window where the '
                        'segmentor has one), ProxyCLIP and ProxyCLIP + GPUA; img/s, time ratio '
                        'to the baseline, peak memory')
    p.add_argument('--gpu-variants', action='store_true',
                   help='--side-by-side with the rows of the GPU item of issue 13: the GPUA rows '
                        'with overlap_encoders (VFM on a second CUDA stream), and SCLIP / '
                        'SCLIP + GPUA with both encoders under torch.compile for each of '
                        '--compile-modes, each compiled GPUA row against its compiled SCLIP')
    p.add_argument('--compile-modes', nargs='*', default=['default', 'reduce-overhead'],
                   help="torch.compile modes for --gpu-variants ('reduce-overhead' = CUDA "
                        'graphs); none: no compiled rows')
    p.add_argument('--text', action='store_true',
                   help='instead: time building the text classifier (--class-names, '
                        '--text-templates) with open_clip\'s full-context encode_text vs our '
                        'short forward (length-sorted batches)')
    p.add_argument('--text-templates', default='openai_imagenet',
                   help="templates for --text (a key of gpua_mmseg.models.templates)")
    p.add_argument('--text-queries', type=int, default=0,
                   help='--text on an evenly spaced sample of this many queries (0 = all); the '
                        'full-vocabulary time is then extrapolated per prompt')
    p.add_argument('--sweep', action='store_true',
                   help='instead: wall time of one plain tools/test.py run and of tools/sweep.py '
                        'over 11 λ values (0, 0.1, ..., 1) on the same generated toy dataset '
                        '(--sweep-images of --sweep-size), GPUA + SCLIP with random weights '
                        '(tiny models; ViT-B/16 + DINOv3 ViT-B/16 with --sweep-vitb), each in a '
                        'fresh process, plain first, then the sweep, then plain again')
    p.add_argument('--sweep-images', type=int, default=8)
    p.add_argument('--sweep-size', type=int, nargs=2, default=(96, 128), metavar=('H', 'W'))
    p.add_argument('--sweep-vitb', action='store_true',
                   help='--sweep with random ViT-B/16 CLIP and DINOv3 ViT-B/16 (224/112 window)')
    args = p.parse_args(argv)
    if args.n_images < 1 or args.warmup < 0 or args.crop_batch_size < 1:
        p.error('--n-images and --crop-batch-size must be >= 1, --warmup >= 0')
    if args.text_queries < 0:
        p.error('--text-queries must be >= 0 (0 = all queries)')
    if args.tiny and args.crop == 224 and args.stride == 112:
        args.crop, args.stride = 64, 32
        if tuple(args.size) == (336, 448):
            args.size = (96, 128)  # 6 crops, as for a VOC-sized image at full scale
    return args


def _templates(n: int) -> List[str]:
    base = ['a photo of a {}.', 'a bad photo of a {}.', 'a photo of the large {}.',
            'a photo of the small {}.', 'a rendering of a {}.', 'art of the {}.']
    return [base[i % len(base)] if i < len(base) else f'{base[i % len(base)]} ({i})'
            for i in range(max(1, n))]


def build_shared(args) -> Dict:
    """Things every case reuses: one random open_clip model (same weights for all rows)."""
    torch.manual_seed(args.seed)
    if args.tiny:
        clip_cfg = dict(name='tiny', pretrained=None, model_cfg=tiny_clip_model_cfg())
    else:
        clip_cfg = dict(name=args.clip, pretrained=None)
    from gpua_mmseg.models.clip import build_clip_encoder
    base = build_clip_encoder(clip_cfg, mode='vanilla').eval()
    return dict(clip_cfg=clip_cfg, base=base)


def clip_cases(args, shared) -> List[Case]:
    """One row per last-block variant, all sharing ``shared['base']``'s open_clip weights."""
    base: CLIPEncoder = shared['base']
    known = set(list_last_blocks())
    cases = []
    for mode in args.variants:
        if mode not in known:
            print(f'skipping variant {mode!r}: not registered (known: {sorted(known)})')
            continue
        mode_cfg = TINY_MODE_CFG.get(mode) if args.tiny else None
        enc = CLIPEncoder(base.model, mode=mode, mode_cfg=mode_cfg, mean=base.mean.tolist(),
                          std=base.std.tolist(), info=base.info)
        seg = GPUASegmentor(clip=enc, clip_mode=mode, class_names=args.class_names,
                            templates=_templates(args.templates), slide_crop=args.crop,
                            slide_stride=args.stride, crop_batch_size=1,
                            autocast_dtype=None if args.autocast == 'none' else args.autocast)
        cases.append(Case(mode, seg.to(args.device).eval()))
    return cases


CASE_BUILDERS: List[Callable] = [clip_cases]


def _sync(device: torch.device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _interleaved_seconds(segs: Dict[str, GPUASegmentor], images: torch.Tensor, warmup: int,
                         device: torch.device, on_timed_start: Optional[Callable] = None
                         ) -> Dict[str, float]:
    """Seconds of ``predict`` per segmentor over ``images [n, 3, H, W]`` (after ``warmup``
    untimed images), the segmentors taking turns image by image so drift hits all alike;
    ``on_timed_start()`` runs once before the first timed image."""
    h, w = images.shape[-2:]
    totals = {n: 0.0 for n in segs}
    with torch.no_grad():
        for i in range(warmup + len(images)):
            img = images[i % len(images)][None]
            if i == warmup and on_timed_start is not None:
                on_timed_start()
            for name, seg in segs.items():
                sample = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w)))
                _sync(device)
                t = time.perf_counter()
                seg.predict(img, [sample])
                _sync(device)
                if i >= warmup:
                    totals[name] += time.perf_counter() - t
    return totals


def time_case(seg: GPUASegmentor, images: torch.Tensor, crop_batch_size: int, warmup: int):
    """Images/s of ``seg.predict`` one image at a time (batch 1, as in evaluation) and the
    per-image class scores (for the equality check between settings)."""
    seg.crop_batch_size = crop_batch_size
    h, w = images.shape[-2:]

    def run(img):
        sample = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w)))
        return seg.predict(img[None], [sample])[0].seg_logits.data

    for i in range(warmup):
        run(images[i % len(images)])
    _sync(images.device)
    t0 = time.perf_counter()
    scores = [run(img) for img in images]
    _sync(images.device)
    return len(images) / (time.perf_counter() - t0), scores


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    shared = build_shared(args)
    g = torch.Generator().manual_seed(args.seed + 1)
    images = (torch.rand((args.n_images, 3) + tuple(args.size), generator=g) * 255).to(device)
    from gpua_mmseg.models.sliding import crop_boxes
    n_crops = len(crop_boxes(args.size[0], args.size[1], args.crop, args.stride))
    bs = args.crop_batch_size
    rows = []
    for builder in CASE_BUILDERS:
        for case in builder(args, shared):
            case.segmentor.get_text_embeddings()  # text encoding is a one-off, not timed
            with torch.no_grad():
                ips1, s1 = time_case(case.segmentor, images, 1, args.warmup)
                ipsb, sb = time_case(case.segmentor, images, bs, args.warmup)
            diff = max(float((a.float() - b.float()).abs().max()) for a, b in zip(s1, sb))
            rows.append((case.group, case.name, ips1, ipsb, diff))
            print(f'{case.group}/{case.name}: {ips1:.3f} -> {ipsb:.3f} img/s', flush=True)
            del case

    dev_name = torch.cuda.get_device_name(device) if device.type == 'cuda' else \
        f'CPU ({torch.get_num_threads()} threads)'
    model = 'tiny random CLIP' if args.tiny else f'{args.clip} (random init)'
    print()
    print(f'{model}, {dev_name}, autocast={args.autocast}, image {args.size[0]}x{args.size[1]}, '
          f'crop {args.crop}/stride {args.stride} = {n_crops} crops/image, '
          f'{args.n_images} images, batch 1 image')
    print()
    print(f'| group | variant | img/s, crop_batch_size=1 | img/s, crop_batch_size={bs} | '
          f'speed-up | max abs diff of scores |')
    print('|---|---|---|---|---|---|')
    for group, name, ips1, ipsb, diff in rows:
        print(f'| {group} | {name} | {ips1:.3f} | {ipsb:.3f} | {ipsb / ips1:.2f}x | {diff:.1e} |')
    return rows



# ---------------------------------------------------------------------------- GPUA rows
def _random_artifact(path: str, dv: int, dc: int, meta: Dict, seed: int) -> str:
    from gpua_mmseg.alignment import AlignmentMap
    g = torch.Generator().manual_seed(seed)
    W = torch.linalg.qr(torch.randn(dv, dc, generator=g, dtype=torch.float64))[0].float()
    AlignmentMap(W, meta).save(path)
    return path


def _random_vfm_and_map(args, base: 'CLIPEncoder', seed: int):
    """A random DINOv3 ViT-B/16 (tiny with ``--tiny``) and a random orthogonal map for it and
    ``base``'s CLIP space, recording the vocabulary: ``(vfm_encoder, artifact_path)``."""
    import os.path as osp
    import tempfile

    from gpua_mmseg.models.vfm import build_vfm_encoder
    from gpua_mmseg.vocabulary import Vocabulary
    torch.manual_seed(seed)
    kw = dict(model_kwargs=dict(embed_dim=64, depth=3, num_heads=4, img_size=64)) \
        if args.tiny else {}
    vfm = build_vfm_encoder(dict(name='vit_base_patch16_dinov3.lvd1689m', pretrained=False, **kw))
    vocab = Vocabulary.parse(args.class_names)
    path = _random_artifact(osp.join(tempfile.mkdtemp(prefix='gpua_bench_'), 'map.safetensors'),
                            vfm.embed_dim, base.embed_dim,
                            dict(vfm=vfm.name, vlm=base.info.get('name'),
                                 vocabulary=vocab.classes, vocab_hash=vocab.hash), args.seed)
    return vfm, path


def gpua_cases(args, shared) -> List[Case]:
    """SCLIP baseline vs SCLIP + GPUA (DINOv3 ViT-B/16 tokens, random orthogonal map, λ = 0.9).

    Besides returning both rows for the main table, measures them side by side here, image by
    image alternately (so drift of a shared machine hits both equally), and the share of the
    fused time spent in the map itself (``GPUAHead.gpua_logits``: centring, W projection,
    normalisation and logits against the text embeddings).  Targets: fused / baseline <= 2.1x,
    map share < 2 %.
    """

    base: CLIPEncoder = shared['base']
    vfm, path = _random_vfm_and_map(args, base, args.seed + 2)
    segs = {}
    for name in ('sclip', 'sclip+gpua'):
        enc = CLIPEncoder(base.model, mode='sclip', mean=base.mean.tolist(),
                          std=base.std.tolist(), info=base.info)
        extra = {}
        if name != 'sclip':
            extra = dict(vfm=vfm, decode_head=dict(type='GPUAHead', alignment_path=path,
                                                   fusion_weight=0.9))
        seg = GPUASegmentor(clip=enc, clip_mode='sclip', class_names=args.class_names,
                            templates=_templates(args.templates), slide_crop=args.crop,
                            slide_stride=args.stride, crop_batch_size=args.crop_batch_size,
                            autocast_dtype=None if args.autocast == 'none' else args.autocast,
                            **extra)
        segs[name] = seg.to(args.device).eval()
        segs[name].get_text_embeddings()
    device = torch.device(args.device)
    head = segs['sclip+gpua'].decode_head
    map_time = [0.0]
    plain_gpua_logits = head.gpua_logits

    def timed_gpua_logits(*a, **k):
        _sync(device)
        t = time.perf_counter()
        out = plain_gpua_logits(*a, **k)
        _sync(device)
        map_time[0] += time.perf_counter() - t
        return out

    g = torch.Generator().manual_seed(args.seed + 3)
    images = (torch.rand((args.n_images, 3) + tuple(args.size), generator=g) * 255).to(device)
    def start_timing():
        head.gpua_logits = timed_gpua_logits           # only timed images count

    totals = _interleaved_seconds(segs, images, args.warmup, device, start_timing)
    del head.gpua_logits                               # back to the class method
    n = args.n_images
    base_s, fused_s = totals['sclip'] / n, totals['sclip+gpua'] / n
    share = map_time[0] / max(totals['sclip+gpua'], 1e-12)
    print(f'| GPUA side by side | baseline {base_s * 1e3:.1f} ms/img | fused '
          f'{fused_s * 1e3:.1f} ms/img | ratio {fused_s / base_s:.2f}x (target <= 2.1x) | '
          f'map {map_time[0] / n * 1e3:.2f} ms/img = {100 * share:.2f} % of fused '
          f'(target < 2 %) |', flush=True)
    return [Case(name, seg, group='gpua') for name, seg in segs.items()]


CASE_BUILDERS.append(gpua_cases)


def proxyclip_cases(args, shared) -> List[Case]:
    """ProxyCLIP (DINOv3 ViT-B/16 proxy attention) vs ProxyCLIP + GPUA on the same VFM forward.

    The VFM runs once per crop batch for both (its tokens feed the proxy attention and the map),
    so GPUA's extra cost over ProxyCLIP is the map alone.  Timed side by side, image by image
    alternately, as ``gpua_cases``.  Target: cost over ProxyCLIP < 3 %.
    """

    base: CLIPEncoder = shared['base']
    vfm, path = _random_vfm_and_map(args, base, args.seed + 4)
    segs = {}
    for name in ('proxyclip', 'proxyclip+gpua'):
        enc = CLIPEncoder(base.model, mode='proxyclip', mean=base.mean.tolist(),
                          std=base.std.tolist(), info=base.info)
        head = (dict(decode_head=dict(type='GPUAHead', alignment_path=path, fusion_weight=0.9))
                if name != 'proxyclip' else {})
        seg = GPUASegmentor(clip=enc, clip_mode='proxyclip', class_names=args.class_names,
                            templates=_templates(args.templates), slide_crop=args.crop,
                            slide_stride=args.stride, crop_batch_size=args.crop_batch_size,
                            autocast_dtype=None if args.autocast == 'none' else args.autocast,
                            vfm=vfm, **head)
        segs[name] = seg.to(args.device).eval()
        segs[name].get_text_embeddings()
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(args.seed + 5)
    images = (torch.rand((args.n_images, 3) + tuple(args.size), generator=g) * 255).to(device)
    totals = _interleaved_seconds(segs, images, args.warmup, device)
    n = args.n_images
    base_s, fused_s = totals['proxyclip'] / n, totals['proxyclip+gpua'] / n
    print(f'| GPUA on ProxyCLIP side by side | ProxyCLIP {base_s * 1e3:.1f} ms/img | '
          f'+GPUA {fused_s * 1e3:.1f} ms/img | cost {100 * (fused_s / base_s - 1):+.2f} % '
          '(target < 3 %: one VFM forward serves both) |', flush=True)
    return [Case(name, seg, group='proxyclip') for name, seg in segs.items()]


CASE_BUILDERS.append(proxyclip_cases)



# ---------------------------------------------------------------------------- side by side
class _PeakMemory:
    """Peak memory of one call: CUDA ``max_memory_allocated`` (weights included), or on the
    CPU the peak resident set above the level before the call, sampled every ~1 ms by a thread
    (torch kernels release the GIL, so the sampler sees the allocations as they happen)."""

    def __init__(self, device: torch.device):
        self.device = device
        self._stop = None

    @staticmethod
    def _rss() -> int:
        import os
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')

    def __enter__(self):
        if self.device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        import threading
        self.base = self.peak = self._rss()
        self._stop = threading.Event()

        def sample():
            while not self._stop.wait(0.001):
                self.peak = max(self.peak, self._rss())
        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            self.mb = torch.cuda.max_memory_allocated(self.device) / 2 ** 20
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self._rss())
            self.mb = (self.peak - self.base) / 2 ** 20
        return False


def _accepts(kwarg: str) -> bool:
    import inspect
    return kwarg in inspect.signature(GPUASegmentor.__init__).parameters


def _compiled_encoder(encoder, mode: str):
    """A shallow copy of ``encoder`` (weights shared) whose ``patch_features`` runs under
    ``torch.compile(mode=mode)``, static shapes (one crop-batch shape, one image shape)."""
    import copy
    out = copy.copy(encoder)  # nn.Module: shares parameters and submodules, own attributes
    out.patch_features = torch.compile(encoder.patch_features, mode=mode, dynamic=False)
    return out


BASELINE_ROW = 'SCLIP, batched'


def side_by_side_rows(args, shared) -> List[tuple]:
    """``(name, segmentor, crop_batch_size, reference row name or None, baseline row name)``
    for the issue-13 table; the reference is the row whose scores this one must equal (same
    computation), the baseline the CLIP-only row its time is divided by."""

    base: CLIPEncoder = shared['base']
    bs = args.crop_batch_size
    auto = None if args.autocast == 'none' else args.autocast

    def seg(mode, compile_mode=None, **kw):
        enc = CLIPEncoder(base.model, mode=mode, mode_cfg=TINY_MODE_CFG.get(mode) if args.tiny
                          else None, mean=base.mean.tolist(), std=base.std.tolist(),
                          info=base.info)
        if compile_mode is not None:
            enc = _compiled_encoder(enc, compile_mode)
            if kw.get('vfm') is not None:
                kw['vfm'] = _compiled_encoder(kw['vfm'], compile_mode)
        return GPUASegmentor(clip=enc, clip_mode=mode, class_names=args.class_names,
                             templates=_templates(args.templates), slide_crop=args.crop,
                             slide_stride=args.stride, crop_batch_size=bs,
                             autocast_dtype=auto, **kw).to(args.device).eval()

    vfm, path = _random_vfm_and_map(args, base, args.seed + 2)
    head = dict(type='GPUAHead', alignment_path=path, fusion_weight=0.9)
    sclip = seg('sclip')
    rows = [('SCLIP, crop by crop (public reference style)', sclip, 1, BASELINE_ROW),
            (BASELINE_ROW, sclip, bs, None)]
    windows = ('crop', 'whole') if _accepts('vfm_window') else ()
    for window in windows:
        rows.append((f"SCLIP + GPUA, vfm_window='{window}'",
                     seg('sclip', vfm=vfm, decode_head=head, vfm_window=window), bs, None))
    if not windows:
        print('note: GPUASegmentor has no vfm_window yet: one GPUA row (VFM on the CLIP crops)')
        rows.append(('SCLIP + GPUA', seg('sclip', vfm=vfm, decode_head=head), bs, None))
    if getattr(args, 'gpu_variants', False):
        for window in windows:  # same operations in another order: the same scores
            rows.append((f"SCLIP + GPUA, vfm_window='{window}', overlap_encoders",
                         seg('sclip', vfm=vfm, decode_head=head, vfm_window=window,
                             overlap_encoders=True), bs,
                         f"SCLIP + GPUA, vfm_window='{window}'"))
        for mode in args.compile_modes:
            own = f'SCLIP, batched, compile {mode}'
            rows.append((own, seg('sclip', compile_mode=mode), bs, BASELINE_ROW, own))
            rows.append((f"SCLIP + GPUA, vfm_window='whole', compile {mode}",
                         seg('sclip', compile_mode=mode, vfm=vfm, decode_head=head,
                             vfm_window='whole'), bs, "SCLIP + GPUA, vfm_window='whole'", own))
            if mode != 'reduce-overhead':  # CUDA graphs replay on their own stream
                rows.append((f"SCLIP + GPUA, vfm_window='whole', compile {mode}, "
                             'overlap_encoders',
                             seg('sclip', compile_mode=mode, vfm=vfm, decode_head=head,
                                 vfm_window='whole', overlap_encoders=True), bs,
                             "SCLIP + GPUA, vfm_window='whole'", own))
    if 'proxyclip' in set(list_last_blocks()):
        rows.append(('ProxyCLIP', seg('proxyclip', vfm=vfm), bs, None))
        rows.append(('ProxyCLIP + GPUA', seg('proxyclip', vfm=vfm, decode_head=head), bs, None))
    else:
        print('note: no proxyclip last block registered: ProxyCLIP rows skipped')
    return [r if len(r) == 5 else r + (BASELINE_ROW,) for r in rows]


def side_by_side_main(args) -> List[Dict]:
    """Times every row of :func:`side_by_side_rows` on the same images, image by image in turn
    (drift of a shared machine hits all rows alike); prints one markdown table."""
    device = torch.device(args.device)
    shared = build_shared(args)
    rows = side_by_side_rows(args, shared)
    for _, seg, _, _, _ in rows:
        seg.get_text_embeddings()  # one-off (and shared: one encoding for all rows)
    g = torch.Generator().manual_seed(args.seed + 1)
    images = (torch.rand((args.n_images, 3) + tuple(args.size), generator=g) * 255).to(device)
    h, w = images.shape[-2:]
    stats = {name: dict(seconds=0.0, mem=0.0, scores=[], error=None)
             for name, _, _, _, _ in rows}
    with torch.no_grad():
        for i in range(args.warmup + args.n_images):
            img = images[i % len(images)][None]
            for name, seg, cbs, _, _ in rows:
                st = stats[name]
                if st['error'] is not None:
                    continue
                seg.crop_batch_size = cbs
                sample = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w)))
                if 'reduce-overhead' in name:  # a new CUDA-graph iteration per image
                    torch.compiler.cudagraph_mark_step_begin()
                _sync(device)
                try:
                    with _PeakMemory(device) as mem:
                        t = time.perf_counter()
                        out = seg.predict(img, [sample])[0].seg_logits.data
                        _sync(device)
                        dt = time.perf_counter() - t
                except Exception as exc:  # a compile mode that fails here is a result too
                    if 'compile' not in name:
                        raise
                    st['error'] = f'{type(exc).__name__}: {str(exc).splitlines()[0][:120]}'
                    print(f'row {name!r} failed: {st["error"]}', flush=True)
                    continue
                if i >= args.warmup:
                    st['seconds'] += dt
                    st['mem'] = max(st['mem'], mem.mb)
                    st['scores'].append(out.float().cpu())
    from gpua_mmseg.models.sliding import crop_boxes
    n_crops = len(crop_boxes(args.size[0], args.size[1], args.crop, args.stride))
    dev_name = torch.cuda.get_device_name(device) if device.type == 'cuda' else \
        f'CPU ({torch.get_num_threads()} threads)'
    mem_col = 'peak CUDA memory allocated (MB)' if device.type == 'cuda' else \
        'peak RSS above the pre-call level (MB)'
    model = 'tiny random CLIP + tiny DINOv3' if args.tiny else \
        f'{args.clip} + DINOv3 ViT-B/16 (random init)'
    print()
    print(f'{model}, {dev_name}, autocast={args.autocast}, image {h}x{w}, crop {args.crop}/'
          f'stride {args.stride} = {n_crops} crops, crop_batch_size {args.crop_batch_size}, '
          f'{args.n_images} images (+{args.warmup} warm-up), rows timed image by image in turn, '
          f'{len(_templates(args.templates))} template(s), text classifier cached')
    print()
    print(f'| row | img/s | s/img | time / its CLIP baseline | {mem_col} | '
          'max abs diff of scores |')
    print('|---|---|---|---|---|---|')
    result = []
    n = args.n_images
    for name, _, _, ref, baseline in rows:
        st = stats[name]
        if st['error'] is not None:
            print(f"| {name} | failed | | | | {st['error']} |")
            result.append(dict(row=name, error=st['error']))
            continue
        diff = '' if ref is None or stats[ref]['error'] is not None else '{:.1e} vs {}'.format(
            max(float((a - b).abs().max()) for a, b in zip(st['scores'], stats[ref]['scores'])),
            ref)
        base_s = stats[baseline]['seconds'] if stats[baseline]['error'] is None else float('nan')
        vs = '' if baseline == BASELINE_ROW else f' (vs {baseline})'
        print(f"| {name} | {n / st['seconds']:.3f} | {st['seconds'] / n:.4f} | "
              f"{st['seconds'] / base_s:.2f}x{vs} | {st['mem']:.0f} | {diff} |")
        result.append(dict(row=name, img_s=n / st['seconds'], ratio=st['seconds'] / base_s,
                           baseline=baseline, peak_mb=st['mem'], diff=diff))
    return result


# ---------------------------------------------------------------------------- text classifier
def text_main(args) -> Dict:
    """Building the text classifier of ``--class-names`` x ``--text-templates`` two ways on the
    same random text tower: open_clip's ``encode_text`` over the full context, in prompt order
    (how it was built before), and :func:`encode_queries` (length-sorted batches, our short
    forward up to each batch's last end-of-text token).  Prints a markdown table."""
    from gpua_mmseg.models.clip import build_clip_encoder
    from gpua_mmseg.models.templates import resolve_templates
    from gpua_mmseg.models.text_classifier import encode_queries
    from gpua_mmseg.vocabulary import Vocabulary
    torch.manual_seed(args.seed)
    cfg = dict(name='tiny', pretrained=None, model_cfg=tiny_clip_model_cfg()) if args.tiny \
        else dict(name=args.clip, pretrained=None)
    enc = build_clip_encoder(cfg).eval().to(args.device)
    device = torch.device(args.device)
    queries = Vocabulary.parse(args.class_names).queries
    templates = resolve_templates(args.text_templates)
    n_all = len(queries) * len(templates)
    if args.text_queries and args.text_queries < len(queries):
        step = len(queries) / args.text_queries
        queries = [queries[int(i * step)] for i in range(args.text_queries)]
    texts = [t.format(q) for q in queries for t in templates]
    tokens = enc.tokenize(texts)
    longest = int(tokens.argmax(-1).max()) + 1

    def full_context():  # tokenization timed on both sides: it is part of the build
        tokens = enc.tokenize(texts)
        embs = []
        for i in range(0, len(texts), 512):  # encode_queries' batch size, prompt order
            e = enc.model.encode_text(tokens[i:i + 512].to(device), normalize=False)
            embs.append(e / e.norm(dim=-1, keepdim=True))
        e = torch.cat(embs).reshape(len(queries), len(templates), -1).mean(1)
        return e / e.norm(dim=-1, keepdim=True)

    out = {}
    with torch.no_grad():
        for name, fn in (('short', lambda: encode_queries(enc, queries, templates)),
                         ('full', full_context)):
            _sync(device)
            t = time.perf_counter()
            out[name] = (fn(), None)
            _sync(device)
            out[name] = (out[name][0], time.perf_counter() - t)
    diff = float((out['short'][0] - out['full'][0]).abs().max())
    full_s, short_s = out['full'][1], out['short'][1]
    scale = n_all / len(texts)
    dev_name = torch.cuda.get_device_name(device) if device.type == 'cuda' else \
        f'CPU ({torch.get_num_threads()} threads)'
    model = 'tiny random CLIP' if args.tiny else f'{args.clip} text tower (random init)'
    sample = '' if scale == 1 else (f'; timed on {len(queries)} evenly spaced queries '
                                    f'({len(texts)} prompts), full-vocabulary times extrapolated')
    print()
    print(f'{model}, {dev_name}: {args.class_names} x {args.text_templates} = {n_all} prompts, '
          f'context {tokens.shape[1]}, longest prompt ends at token {longest}{sample}')
    print()
    print('| text forward | s (timed prompts) | s (whole vocabulary) | prompts/s | speed-up | '
          'max abs diff of embeddings |')
    print('|---|---|---|---|---|---|')
    print(f'| open_clip encode_text, full context | {full_s:.2f} | {full_s * scale:.1f} | '
          f'{len(texts) / full_s:.1f} | 1.00x | |')
    print(f'| ours, short forward, length-sorted | {short_s:.2f} | {short_s * scale:.1f} | '
          f'{len(texts) / short_s:.1f} | {full_s / short_s:.2f}x | {diff:.1e} |')
    return dict(full_s=full_s, short_s=short_s, scale=scale, diff=diff, longest=longest,
                prompts=len(texts))


# ---------------------------------------------------------------------------- peak memory
MEMORY_INPUT = (448, 448)  # working resolution of an 8000 x 8000 photo under scale (2048, 448)


def _peak_rss_mb() -> float:
    import resource
    import sys
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024.0 / (1024.0 if sys.platform == 'darwin' else 1.0)  # KiB on Linux


def memory_child(class_names: str, h0: int, w0: int) -> Dict:
    """In a fresh process: tiny CLIP segmentor, one predict() of a MEMORY_INPUT image whose
    ``ori_shape`` is (h0, w0); peak RSS before and after that call."""
    import json
    torch.manual_seed(0)
    from gpua_mmseg.models.clip import build_clip_encoder
    clip = build_clip_encoder(dict(name='tiny', pretrained=None, model_cfg=tiny_clip_model_cfg()),
                              mode='sclip')
    seg = GPUASegmentor(clip=clip, clip_mode='sclip', class_names=class_names,
                        templates=['a photo of a {}.'], slide_crop=224, slide_stride=224).eval()
    seg.get_text_embeddings()
    img = torch.rand((1, 3) + MEMORY_INPUT) * 255
    small = SegDataSample(metainfo=dict(img_shape=MEMORY_INPUT, ori_shape=MEMORY_INPUT))
    seg.predict(img, [small])  # warm-up at the working size: allocator, kernels
    before = _peak_rss_mb()
    sample = SegDataSample(metainfo=dict(img_shape=MEMORY_INPUT, ori_shape=(h0, w0)))
    out = seg.predict(img, [sample])[0]
    after = _peak_rss_mb()
    res = dict(classes=class_names, num_classes=seg.num_classes,
               num_queries=int(seg.query_to_class.numel()), h0=h0, w0=w0,
               rss_before_mb=before, rss_peak_mb=after,
               pred_shape=list(out.pred_sem_seg.data.shape),
               seg_logits_shape=list(out.seg_logits.data.shape))
    print('MEMORY_RESULT ' + json.dumps(res), flush=True)
    return res


def memory_main(args) -> List[Dict]:
    """One fresh process per vocabulary, so each peak is its own; prints a markdown table."""
    import json
    import subprocess
    import sys
    h0, w0 = args.memory_size
    rows = []
    for key in args.memory_classes:
        r = subprocess.run([sys.executable, __file__, '--memory-child', key, str(h0), str(w0)],
                           capture_output=True, text=True)
        line = [ln for ln in r.stdout.splitlines() if ln.startswith('MEMORY_RESULT ')]
        if r.returncode != 0 or not line:
            raise SystemExit(f'memory run for {key!r} failed (exit {r.returncode}):\n'
                             f'{r.stderr[-3000:]}')
        rows.append(json.loads(line[0][len('MEMORY_RESULT '):]))
    lines = [f'Peak RSS of one GPUASegmentor.predict() (tiny random CLIP, CPU, input '
             f'{MEMORY_INPUT[0]}x{MEMORY_INPUT[1]}, original {h0}x{w0}); "full-size logits" is '
             'what one fp32 [Q, H0, W0] tensor of the unbounded path would take.', '',
             '| classes | C | queries | peak RSS before (MB) | peak RSS after (MB) | increase (MB) '
             '| pred_sem_seg | seg_logits | one full-size logits tensor (MB) |',
             '|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        full = r['num_queries'] * h0 * w0 * 4 / 2 ** 20
        lines.append(f"| {r['classes']} | {r['num_classes']} | {r['num_queries']} | "
                     f"{r['rss_before_mb']:.0f} | {r['rss_peak_mb']:.0f} | "
                     f"{r['rss_peak_mb'] - r['rss_before_mb']:.0f} | "
                     f"{'x'.join(map(str, r['pred_shape']))} | "
                     f"{'x'.join(map(str, r['seg_logits_shape']))} | {full:.0f} |")
    table = '\n'.join(lines) + '\n'
    print(table, end='')
    if args.memory_out:
        from gpua_mmseg.utils.atomic import atomic_write_text
        atomic_write_text(args.memory_out, table)
    return rows


# ---------------------------------------------------------------------------- λ sweep
SWEEP_CONFIG = 'configs/gpua/gpua_sclip_dinov3_vitb16_voc21.py'


def _sweep_options(args, data_root: str, artifact: str) -> List[str]:
    """``--cfg-options`` of both runs: random encoders, the toy dataset, the random map."""
    opts = ['model.clip.pretrained=None', 'model.vfm.pretrained=False',
            f'model.decode_head.alignment_path={artifact}',
            f'test_dataloader.dataset.data_root={data_root}', 'test_dataloader.num_workers=0',
            'model.templates=[{}]', 'randomness.seed=0']
    if not args.sweep_vitb:
        opts += ['model.clip.name=tiny', 'model.vfm.model_kwargs.embed_dim=64',
                 'model.vfm.model_kwargs.depth=3', 'model.vfm.model_kwargs.num_heads=4',
                 'model.vfm.model_kwargs.img_size=64', 'model.slide_crop=64',
                 'model.slide_stride=32', 'test_dataloader.dataset.pipeline.1.scale=(2048,96)']
        def flat(prefix, d):
            for k, v in d.items():
                yield from (flat(f'{prefix}.{k}', v) if isinstance(v, dict)
                            else [f'{prefix}.{k}={v}'])
        opts += list(flat('model.clip.model_cfg', tiny_clip_model_cfg()))
    else:
        h, w = args.sweep_size
        opts.append(f'test_dataloader.dataset.pipeline.1.scale=({max(h, w) * 4},{min(h, w)})')
    return opts


def sweep_main(args) -> Dict:
    """One plain ``tools/test.py`` run vs ``tools/sweep.py`` over 11 λ values, wall-clock, each
    in a fresh process (start-up included: what a user waits for), plain run timed before and
    after the sweep (drift of a shared machine shows as a gap between the two)."""
    import os
    import os.path as osp
    import re
    import subprocess
    import sys
    import tempfile

    from gpua_mmseg.vocabulary import Vocabulary
    root = osp.dirname(osp.dirname(osp.abspath(__file__)))
    tmp = tempfile.mkdtemp(prefix='gpua_sweep_bench_')
    data = osp.join(tmp, 'toy')
    h, w = args.sweep_size
    subprocess.run([sys.executable, osp.join(root, 'tools/make_toy_dataset.py'), data, '--n',
                    str(args.sweep_images), '--size', str(h), str(w)], check=True,
                   capture_output=True)
    dv, dc = (768, 512) if args.sweep_vitb else (64, tiny_clip_model_cfg()['embed_dim'])
    vocab = Vocabulary.parse('voc21')
    art = _random_artifact(osp.join(tmp, 'map.safetensors'), dv, dc,
                           dict(vfm='vit_base_patch16_dinov3.lvd1689m', vocabulary=vocab.classes,
                                vocab_hash=vocab.hash), args.seed)
    opts = _sweep_options(args, data, art)
    env = dict(os.environ, PYTHONWARNINGS='ignore')
    if args.threads:
        env['OMP_NUM_THREADS'] = str(args.threads)

    def timed(cmd):
        t = time.perf_counter()
        r = subprocess.run([sys.executable] + cmd, cwd=root, capture_output=True, text=True,
                           env=env)
        dt = time.perf_counter() - t
        if r.returncode != 0:
            raise RuntimeError(f'{cmd[0]} failed ({r.returncode}): {r.stderr[-2000:]}')
        return dt, r.stdout

    lambdas = [f'{0.1 * i:.1f}' for i in range(11)]
    plain1, out1 = timed(['tools/test.py', SWEEP_CONFIG, '--work-dir', osp.join(tmp, 'p1'),
                          '--cfg-options'] + opts)
    sweep_s, sweep_out = timed(['tools/sweep.py', SWEEP_CONFIG, '--fusion-weight'] + lambdas
                               + ['--out', osp.join(tmp, 'sweep', 'sw'), '--cfg-options'] + opts)
    plain2, _ = timed(['tools/test.py', SWEEP_CONFIG, '--work-dir', osp.join(tmp, 'p2'),
                       '--cfg-options'] + opts)
    plain = (plain1 + plain2) / 2
    miou_plain = re.search(r'^metrics: .*\bmIoU=([0-9.]+)', out1, re.M)
    timing = re.search(r'^timing: .*$', sweep_out, re.M)
    model = ('ViT-B/16 CLIP + DINOv3 ViT-B/16' if args.sweep_vitb
             else 'tiny CLIP + tiny DINOv3') + ' (random init), GPUA + SCLIP'
    print(f'{model}, {args.sweep_images} toy images {h}x{w}, CPU threads '
          f'{args.threads or torch.get_num_threads()}, each run a fresh process')
    print()
    print('| run | wall s | / one plain run |')
    print('|---|---|---|')
    print(f'| tools/test.py (plain, λ=0.9), before the sweep | {plain1:.1f} | '
          f'{plain1 / plain:.2f} |')
    print(f'| tools/test.py (plain, λ=0.9), after the sweep | {plain2:.1f} | '
          f'{plain2 / plain:.2f} |')
    print(f'| tools/sweep.py, 11 λ values | {sweep_s:.1f} | {sweep_s / plain:.2f} |')
    print()
    print(f'sweep / plain = {sweep_s / plain:.2f} (acceptance: < 2); plain mIoU '
          f'{miou_plain.group(1) if miou_plain else "?"}')
    if timing:
        print(f'sweep {timing.group(0)}')
    return dict(plain_s=plain, plain_runs=(plain1, plain2), sweep_s=sweep_s,
                ratio=sweep_s / plain)


def cli(argv=None):
    args = parse_args(argv)
    if args.memory_child:
        key, h0, w0 = args.memory_child
        memory_child(key, int(h0), int(w0))
    elif args.memory:
        memory_main(args)
    elif args.side_by_side:
        side_by_side_main(args)
    elif args.text:
        text_main(args)
    elif args.sweep:
        sweep_main(args)
    else:
        main(argv)


if __name__ == '__main__':
    cli()
