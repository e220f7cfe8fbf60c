"""Training the toy CLIP (image-caption contrastive) and the toy VFM (label-free, pixels only).

Both run on CPU with one thread and fixed seeds, so a given (seed, steps, batch) reproduces the
same weights bit for bit on the same torch build *and the same CPU kernels*: BLAS and ATen pick
kernels by instruction set (AVX-512, AVX2, none), and those round differently.  The manifest
records, for each file, :func:`kernel_probe` of the machine that trained it, the
``prefix_sha256`` after a few steps and a ``prefix_fingerprint`` (:func:`state_fingerprint`).
``tests/toyworld`` reruns the prefix: where the probe matches, the digest must match bit for
bit; elsewhere the fingerprint must lie within :data:`PREFIX_TOLERANCE` (measured: other
kernels move the 3-step CLIP state by <= 2.6e-7 of its norm, a 1 % change of the learning rate
by 1.6e-5).  Scenes are generated on the fly from
``numpy.random.default_rng([data_seed, index, ...])``: step ``s`` uses scenes
``s * batch .. (s + 1) * batch - 1`` of the training world, which never overlaps the evaluation
worlds (other ``data_seed``).

* CLIP: open_clip ``CLIP`` with average pooling (see :mod:`.models`); symmetric InfoNCE between
  images and captions, where two samples whose captions name the same set of classes count as
  positives of each other (soft targets), not as negatives.
* VFM: timm DINOv3 ViT; two renderings of one layout (same geometry, crop offsets on the patch
  grid, new background noise; colours drawn anew or permuted / inverted).  ``objective``:

  - ``'cluster'`` (shipped): every patch token predicts, through a *linear* head, the k-means
    cluster (:func:`cluster_codebook`, ``clusters`` centroids) of its patch's colour-invariant
    texture statistics (:func:`cooccurrence_targets`), computed from the pixels: DeepCluster
    with a hand-made descriptor (MaskFeat's HOG target in spirit).  The linear head makes the
    tokens themselves separate the clusters, the geometry an orthogonal map can carry;
  - ``'cooc'``: the same statistics (and their 3 x 3-patch neighbourhood mean) regressed
    through an MLP head (the previous VFM: the tokens carried them poorly, probe 38 %);
  - ``'detcon'``: DetCon InfoNCE between mask-pooled tokens of the two views, masks computed
    from the pixels (:func:`colour_regions`);
  - ``'vicreg'``: dense VICReg between corresponding patches (the first shipped VFM).
"""
import hashlib
import json
import math
import time
from typing import Callable, Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .models import TOY_VFM_NAME, clip_model_cfg, vfm_cfg_overlay, vfm_model_kwargs
from .scenes import caption, class_presence, make_scene, render, sample_layout

__all__ = ['state_dict_sha256', 'state_fingerprint', 'fingerprint_distance', 'kernel_probe',
           'PREFIX_TOLERANCE', 'train_clip', 'train_vfm', 'CLIP_DEFAULTS', 'VFM_DEFAULTS',
           'TRAIN_DATA_SEED', 'save_weights', 'update_manifest', 'file_sha256']

TRAIN_DATA_SEED = 1000  # training world; evaluation datasets use other seeds
CLIP_DEFAULTS = dict(steps=1000, batch=128, lr=2e-3, wd=0.05, warmup=50, seed=0)
VFM_DEFAULTS = dict(steps=800, batch=48, lr=2e-3, wd=0.05, warmup=30, seed=0,
                    init_values=0.1, curriculum=0.0, objective='cluster', tau=0.1, clusters=64,
                    width=128)
VFM_OBJECTIVES = ('cooc', 'cluster', 'detcon', 'vicreg')

# CLIP's normalisation (open_clip's OPENAI_DATASET_MEAN/STD) and timm's DINOv3 pretrained_cfg
# (ImageNet): each encoder is trained with the statistics its loader will use.
_CLIP_MEAN, _CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def state_dict_sha256(model: torch.nn.Module) -> str:
    """sha256 over (name, dtype, shape, raw bytes) of every state-dict tensor, in key order."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        v = v.detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(v.dtype).encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.numpy().tobytes() if v.dtype != torch.bfloat16 else v.view(torch.int16).numpy().tobytes())
    return h.hexdigest()


#: largest relative distance (:func:`fingerprint_distance`) between a rerun prefix and the
#: manifest's when the CPU kernels differ: 8x the largest kernel effect measured on the 3-step
#: CLIP prefix (AVX-512 vs AVX2 vs no vectorisation, MKL's CBWR modes: 1.4e-7 .. 2.6e-7), 8x
#: below a 1 % learning-rate change (1.6e-5); other training data moves it by 1e-3.
PREFIX_TOLERANCE = 2e-6
FINGERPRINT_DIM = 32


def state_fingerprint(model: torch.nn.Module, dim: int = FINGERPRINT_DIM) -> Dict:
    """Float summary of a state dict that survives rounding differences: ``norm`` (the
    float64 norm of all floating entries) and ``projections`` (``dim`` fixed Gaussian random
    projections of them, key order, seed 0), so ``||P a - P b|| / sqrt(dim)`` estimates
    ``||a - b||`` (Johnson-Lindenstrauss; within about 25 % for dim 32)."""
    g = torch.Generator().manual_seed(0)
    acc = torch.zeros(dim, dtype=torch.float64)
    sq = 0.0
    for _, v in model.state_dict().items():
        if not v.is_floating_point():
            continue
        flat = v.detach().cpu().double().flatten()
        sq += float(flat.square().sum())
        for i in range(0, flat.numel(), 1 << 16):
            chunk = flat[i:i + (1 << 16)]
            acc += torch.randn(dim, chunk.numel(), generator=g, dtype=torch.float64) @ chunk
    return dict(norm=math.sqrt(sq), projections=acc.tolist())


def fingerprint_distance(a: Dict, b: Dict) -> float:
    """Estimated ``||a - b|| / ||a||`` of two states from their :func:`state_fingerprint`."""
    pa, pb = torch.tensor(a['projections']), torch.tensor(b['projections'])
    if pa.shape != pb.shape:
        raise ValueError(f'fingerprints of different sizes: {pa.numel()} vs {pb.numel()}')
    return float((pa - pb).norm() / math.sqrt(pa.numel()) / a['norm'])


def kernel_probe() -> str:
    """Digest (16 hex digits) of a fixed one-thread fp32 forward/backward/AdamW step through the
    kernels the toy training uses (linear layers at its widths, the patch convolution, layer
    norm, GELU, softmax, scaled-dot-product attention).  Two machines with equal probes round
    the training alike; a different instruction set (``ATEN_CPU_CAPABILITY``, BLAS) changes it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g = torch.Generator().manual_seed(0)
        rnd = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
        params = [rnd(128, 3, 8, 8).mul_(0.05), rnd(384, 128).mul_(0.05), rnd(128, 128).mul_(0.05),
                  rnd(144, 48).mul_(0.1), rnd(512, 128).mul_(0.05)]
        for p in params:
            p.requires_grad_(True)
        img = rnd(8, 3, 64, 64)
        x = F.conv2d(img, params[0], stride=8).flatten(2).transpose(1, 2)   # [8, 64, 128]
        x = F.layer_norm(x, (128,))
        q, k, v = F.linear(x, params[1]).view(8, 64, 3, 4, 32).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(8, 64, 128)
        h = F.gelu(F.linear(a, params[2]) + x)
        t = F.linear(rnd(16, 24, 48), params[3])
        logits = F.linear(h, params[4]).mean(1) @ F.linear(h.mean(1), params[4]).t()
        loss = F.log_softmax(logits, 1).diagonal().mean() + t.softmax(-1).square().mean()
        loss.backward()
        opt = torch.optim.AdamW(params, lr=1e-3)
        opt.step()
        hsh = hashlib.sha256()
        for out in [x, a, h, logits, loss.detach()] + params:
            hsh.update(out.detach().contiguous().numpy().tobytes())
        return hsh.hexdigest()[:16]
    finally:
        torch.set_num_threads(threads)


def _setup(seed: int) -> None:
    torch.set_num_threads(1)  # bit-reproducible reductions; leaves the other cores free
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


def _lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return lr * 0.5 * (1 + math.cos(math.pi * t))


def _to_tensor(images: np.ndarray, mean, std) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> normalised float [B, 3, H, W]."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return (x - m) / s


def _log(logger: Optional[Callable], msg: str) -> None:
    if logger is not None:
        logger(msg)


def train_clip(steps: int = CLIP_DEFAULTS['steps'], batch: int = CLIP_DEFAULTS['batch'],
               lr: float = CLIP_DEFAULTS['lr'], wd: float = CLIP_DEFAULTS['wd'],
               warmup: int = CLIP_DEFAULTS['warmup'], seed: int = CLIP_DEFAULTS['seed'],
               size: int = 64, logger: Optional[Callable] = print, log_every: int = 50,
               stop_after: Optional[int] = None, prefix_steps: int = 3):
    """Train the toy CLIP -> (open_clip ``CLIP`` in eval mode, stats dict).

    stats: ``loss_first``, ``loss_last`` (mean of the last 20 steps), ``seconds``, ``steps``,
    ``prefix_sha256`` (:func:`state_dict_sha256` after ``prefix_steps`` steps: the cheap
    reproducibility check).  ``stop_after=k`` stops after k steps of the ``steps``-step schedule.
    """
    from open_clip.model import CLIP
    from open_clip.tokenizer import SimpleTokenizer
    _setup(seed)
    model = CLIP(**clip_model_cfg())
    tok = SimpleTokenizer(context_length=model.context_length)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and 'embedding' not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and 'embedding' not in n)]
    opt = torch.optim.AdamW([dict(params=decay, weight_decay=wd), dict(params=rest, weight_decay=0.)],
                            lr=lr, betas=(0.9, 0.98), eps=1e-6)
    cap_rng = np.random.default_rng([seed, 7])
    losses, t0, prefix, fingerprint = [], time.time(), None, None
    model.train()
    for step in range(steps):
        imgs, caps, sets = [], [], []
        for i in range(batch):
            img, lab, _ = make_scene(TRAIN_DATA_SEED, step * batch + i, size)
            present = class_presence(lab)
            imgs.append(img)
            caps.append(caption(present, cap_rng))
            sets.append(sum(1 << c for c in present))
        x = _to_tensor(np.stack(imgs), _CLIP_MEAN, _CLIP_STD)
        text = tok(caps)
        same = torch.tensor(sets).view(-1, 1) == torch.tensor(sets).view(1, -1)
        target = same.float() / same.float().sum(1, keepdim=True)
        for g in opt.param_groups:
            g['lr'] = _lr_at(step, steps, lr, warmup)
        img_f, txt_f, scale = model(x, text)
        logits = scale * img_f @ txt_f.t()
        loss = 0.5 * (torch.sum(-target * F.log_softmax(logits, 1), 1).mean()
                      + torch.sum(-target * F.log_softmax(logits.t(), 1), 1).mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
        if step + 1 == prefix_steps:
            prefix = state_dict_sha256(model)
            fingerprint = state_fingerprint(model)
        if stop_after is not None and step + 1 >= stop_after:
            break
        if step % log_every == 0 or step == steps - 1:
            _log(logger, f'clip step {step}/{steps} loss {loss.item():.4f} '
                         f'scale {model.logit_scale.exp().item():.1f} {time.time() - t0:.0f}s')
    model.eval()
    return model, dict(loss_first=losses[0], loss_last=float(np.mean(losses[-20:])),
                       seconds=round(time.time() - t0, 1), steps=len(losses),
                       prefix_steps=prefix_steps, prefix_sha256=prefix,
                       prefix_fingerprint=fingerprint)


def _vfm_views(step: int, batch: int, size: int, canvas: int, patch: int, p_easy: float = 0.0,
               fresh_colours: bool = False):
    """Two renderings of ``batch`` layouts -> (view A, view B uint8 [B, S, S, 3], offsets [B, 2, 2]).

    Both views have their own crop offset (on the patch grid) and their own background noise;
    view B's colours are view A's under a random channel permutation and per-channel inversion,
    so no absolute colour survives from one view to the other while texture and shape do.
    ``fresh_colours``: view B is instead painted with colours drawn anew (a second rendering).
    With probability ``p_easy`` a scene's view B keeps view A's noise and colours instead (only
    the crop moves): the curriculum that keeps InfoNCE out of its collapsed state (all features
    equal, loss = ln(patches)), where it stays when started on the hard views alone.
    """
    rng = np.random.default_rng([TRAIN_DATA_SEED, step, 99])
    n_off = (canvas - size) // patch + 1
    va, vb, offs = [], [], []
    for i in range(batch):
        idx = 10_000_000 + step * batch + i
        layout = sample_layout(TRAIN_DATA_SEED, idx, canvas)
        o = rng.integers(0, n_off, size=(2, 2)) * patch
        a, _ = render(layout, np.random.default_rng([TRAIN_DATA_SEED, idx, 1]), tuple(o[0]), size,
                      noise_rng=np.random.default_rng([TRAIN_DATA_SEED, idx, 2]))
        easy = rng.random() < p_easy
        b, _ = render(layout, np.random.default_rng([TRAIN_DATA_SEED, idx, 1]), tuple(o[1]), size,
                      noise_rng=np.random.default_rng([TRAIN_DATA_SEED, idx, 2 if easy else 3]))
        if fresh_colours and not easy:  # new colours drawn from scratch, not a recolouring
            b, _ = render(layout, np.random.default_rng([TRAIN_DATA_SEED, idx, 4]), tuple(o[1]),
                          size, noise_rng=np.random.default_rng([TRAIN_DATA_SEED, idx, 3]))
        perm, flip = rng.permutation(3), rng.random(3) < 0.5
        if not easy and not fresh_colours:
            b = np.where(flip, 255 - b[..., perm], b[..., perm]).astype(np.uint8)
        va.append(a)
        vb.append(b)
        offs.append(o)
    return np.stack(va), np.stack(vb), np.stack(offs)


def colour_regions(image: np.ndarray, patch: int, min_share: float = 0.125) -> np.ndarray:
    """Object proposals computed from the pixels alone: uint8 image [S, S, 3] -> region id of
    every patch [S/p, S/p] (int64, 0..R-1).

    The toy world paints every region (object or background part) with its own pair of random
    colours, so a patch's *colour set* (the at most two exact RGB values covering at least
    ``min_share`` of its pixels) names its region; patches with the same
    set form one proposal, DetCon's role for Felzenszwalb superpixels.  Patches straddling a
    boundary get mixed sets and form small proposals of their own.  No label, layout or
    generator state is read here: only ``image``.
    """
    s = image.shape[0] // patch
    rgb = image[:s * patch, :s * patch].astype(np.int64)
    codes = (rgb * np.array([1 << 16, 1 << 8, 1])).sum(-1)  # one integer per exact colour
    blocks = codes.reshape(s, patch, s, patch).transpose(0, 2, 1, 3).reshape(s * s, -1)
    keys, ids = {}, np.zeros(s * s, dtype=np.int64)
    for n, blk in enumerate(blocks):
        vals, counts = np.unique(blk, return_counts=True)
        keep = vals[counts >= min_share * blk.size]
        key = tuple(sorted(keep.tolist())[:2]) if keep.size else (int(vals[counts.argmax()]),)
        ids[n] = keys.setdefault(key, len(keys))
    return ids.reshape(s, s)


def _detcon_loss(ta: torch.Tensor, tb: torch.Tensor, regions: torch.Tensor, tgt: torch.Tensor,
                 valid: torch.Tensor, head: torch.nn.Module, tau: float) -> torch.Tensor:
    """DetCon (Henaff et al. 2021, SimCLR form) over mask-pooled patch tokens.

    ta, tb: [B, N, D] tokens of the two views; regions: [B, N] proposal id of view A's patches
    (from :func:`colour_regions`); tgt: [B, N] index of the view-B patch covering the same layout
    pixels; valid: [B, N] whether that patch is inside view B.  Each proposal is pooled over its
    patches that both views see; the positive of a view-A proposal is the same proposal in view
    B; every other proposal of the batch (same scene or not, either view) is a negative.
    """
    b, n, d = ta.shape
    tb_al = torch.gather(tb, 1, tgt.unsqueeze(-1).expand(-1, -1, d))  # view B on view A's grid
    r_max = int(regions.max()) + 1
    seg = (torch.arange(b).view(-1, 1) * r_max + regions)[valid]  # [M] global proposal ids
    uniq, inv = torch.unique(seg, return_inverse=True)
    onehot = torch.zeros(uniq.numel(), seg.numel())
    onehot[inv, torch.arange(seg.numel())] = 1.0
    onehot = onehot / onehot.sum(1, keepdim=True)
    pa = F.normalize(head(onehot @ ta[valid]), dim=-1)  # [R, D']
    pb = F.normalize(head(onehot @ tb_al[valid]), dim=-1)
    z = torch.cat([pa, pb])
    logits = z @ z.t() / tau
    logits = logits - 1e9 * torch.eye(z.shape[0])
    r = pa.shape[0]
    target = torch.cat([torch.arange(r, 2 * r), torch.arange(r)])
    return F.cross_entropy(logits, target)


#: pixel offsets (dy, dx) of :func:`cooccurrence_targets`: half of the 7 x 7 neighbourhood
COOC_OFFSETS = tuple((dy, dx) for dy in range(4) for dx in range(-3, 4) if (dy, dx) > (0, 0))


def cooccurrence_targets(images: np.ndarray, patch: int, context: int = 1) -> np.ndarray:
    """Colour-invariant texture statistics of every patch, from the pixels alone (the
    hand-made regression target of the ``cooc`` objective, as HOG is MaskFeat's).

    images: uint8 [B, S, S, 3] -> float32 [B, S/p, S/p, 2 * len(COOC_OFFSETS)]: for each offset
    (dy, dx) of :data:`COOC_OFFSETS`, the fraction of the patch's pixels whose colour equals the
    pixel at that offset exactly, then the same statistics averaged over the
    (2 context + 1)^2 neighbourhood of patches (a region-level target, so a token also learns
    what surrounds it).  Equality of colours, never the colours themselves: a recoloured image
    has the same targets, so colour can not be what the VFM learns; background noise redrawn
    keeps the statistics of its texture.  Exact equality suits the toy world's flat-colour
    lossless renderings.  No label, layout or generator state is read.
    """
    codes = (images.astype(np.int64) * np.array([1 << 16, 1 << 8, 1])).sum(-1)  # [B, S, S]
    b, s, _ = codes.shape
    g = s // patch
    pad = np.pad(codes, ((0, 0), (0, 3), (3, 3)), mode='edge')
    stats = []
    for dy, dx in COOC_OFFSETS:
        eq = pad[:, dy:dy + s, 3 + dx:3 + dx + s] == codes
        stats.append(eq.reshape(b, g, patch, g, patch).mean((2, 4)))
    own = np.stack(stats, -1).astype(np.float32)  # [B, g, g, T]
    k = 2 * context + 1
    padded = np.pad(own, ((0, 0), (context, context), (context, context), (0, 0)), mode='edge')
    ctx = sum(padded[:, i:i + g, j:j + g] for i in range(k) for j in range(k)) / (k * k)
    return np.concatenate([own, ctx], -1)


def cluster_codebook(k: int, patch: int = 8, size: int = 64, n_scenes: int = 1500,
                     iters: int = 30, seed: int = 0) -> torch.Tensor:
    """Codebook of the ``cluster`` objective: k-means centroids ``[k, T]`` of the patch-level
    texture statistics (the first half of :func:`cooccurrence_targets`, no context) of
    ``n_scenes`` training-world scenes (their own index range).  Pixels only: no label, layout
    or generator state is read.  Deterministic: random initial centroids from ``seed``, a
    fixed number of Lloyd iterations; an emptied cluster keeps its centroid."""
    n_own = len(COOC_OFFSETS)
    ims = np.stack([make_scene(TRAIN_DATA_SEED, 30_000_000 + i, size)[0]
                    for i in range(n_scenes)])
    x = torch.from_numpy(cooccurrence_targets(ims, patch)[..., :n_own]).reshape(-1, n_own)
    g = torch.Generator().manual_seed(seed)
    c = x[torch.randperm(x.shape[0], generator=g)[:k]].clone()
    for _ in range(iters):
        a = torch.cdist(x, c).argmin(1)
        num = torch.zeros_like(c).index_add_(0, a, x)
        cnt = torch.bincount(a, minlength=k).to(x.dtype)
        c = torch.where(cnt[:, None] > 0, num / cnt.clamp_min(1)[:, None], c)
    return c


def _vicreg(za: torch.Tensor, zb: torch.Tensor, sim: float = 25.0, var: float = 25.0,
            cov: float = 1.0) -> torch.Tensor:
    """VICReg between corresponding patch tokens ``[M, D]``: invariance (MSE) + per-dimension
    std hinged at 1 + decorrelated dimensions (Bardes et al. 2022 weights)."""
    inv = F.mse_loss(za, zb)
    out = sim * inv
    for z in (za, zb):
        z = z - z.mean(0)
        std = torch.sqrt(z.var(0) + 1e-4)
        c = (z.t() @ z) / (z.shape[0] - 1)
        off = c - torch.diag(torch.diag(c))
        out = out + var * F.relu(1 - std).mean() + cov * off.pow(2).sum() / z.shape[1]
    return out


def train_vfm(steps: int = VFM_DEFAULTS['steps'], batch: int = VFM_DEFAULTS['batch'],
              lr: float = VFM_DEFAULTS['lr'], wd: float = VFM_DEFAULTS['wd'],
              warmup: int = VFM_DEFAULTS['warmup'], seed: int = VFM_DEFAULTS['seed'],
              init_values: float = VFM_DEFAULTS['init_values'],
              curriculum: float = VFM_DEFAULTS['curriculum'],
              objective: str = VFM_DEFAULTS['objective'], tau: float = VFM_DEFAULTS['tau'],
              clusters: int = VFM_DEFAULTS['clusters'], width: int = VFM_DEFAULTS['width'],
              size: int = 64,
              logger: Optional[Callable] = print, log_every: int = 50,
              stop_after: Optional[int] = None, prefix_steps: int = 3):
    """Train the toy VFM -> (timm model in eval mode, stats dict) with ``objective`` (module
    docstring); ``tau``: InfoNCE temperature of ``'detcon'``.  No label, layout or generator
    state reaches the loss: views, masks and targets come from rendered pixels.

    ``curriculum``: fraction of the steps over which the share of easy views (see
    :func:`_vfm_views`) falls linearly from 1 to 0.
    ``init_values``: initial layer-scale gammas.  timm's DINOv3 default (1e-5) suits fine-tuning
    a trained model; from scratch in a few hundred steps it keeps the blocks switched off and
    the loss stalls near ln(batch patches).  Only the initialisation differs: the saved file
    has the same keys and loads into the stock architecture.
    """
    import timm
    _setup(seed)
    kw = dict(vfm_model_kwargs(), embed_dim=width)
    model = timm.create_model(TOY_VFM_NAME, pretrained=False, num_classes=0,
                              dynamic_img_size=True, init_values=init_values,
                              pretrained_cfg_overlay=vfm_cfg_overlay(), **kw)
    cfg = model.pretrained_cfg
    mean, std = tuple(cfg['mean']), tuple(cfg['std'])
    patch = model.patch_embed.patch_size[0]
    g = size // patch
    npre = model.num_prefix_tokens
    # No decay on norms, layer scales, biases and tokens: decaying the final norm's weight is the
    # quickest way to flatten every feature, i.e. the collapse InfoNCE falls into from a random init.
    decay = [p for p in model.parameters() if p.ndim >= 2 and p.shape[0] > 1]
    rest = [p for p in model.parameters() if not (p.ndim >= 2 and p.shape[0] > 1)]
    if objective not in VFM_OBJECTIVES:
        raise ValueError(f'objective must be one of {VFM_OBJECTIVES}, got {objective!r}')
    head = codebook = None
    if objective == 'cluster':
        codebook = cluster_codebook(clusters, patch, size, seed=seed)
        # linear: the tokens themselves must separate the clusters (the geometry an orthogonal
        # map can carry), not an MLP on top of them
        head = torch.nn.Linear(model.embed_dim, clusters)
        decay += [head.weight]
        rest += [head.bias]
    if objective in ('cooc', 'detcon'):
        # Projection head (trained, not saved): the loss acts on head(pooled tokens), GPUA reads
        # the tokens themselves.
        width = model.embed_dim
        head = torch.nn.Sequential(torch.nn.Linear(width, 4 * width), torch.nn.GELU(),
                                   torch.nn.Linear(4 * width, 2 * len(COOC_OFFSETS)
                                                   if objective == 'cooc' else width))
        decay += [p for p in head.parameters() if p.ndim >= 2]
        rest += [p for p in head.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([dict(params=decay, weight_decay=wd), dict(params=rest, weight_decay=0.)],
                            lr=lr, betas=(0.9, 0.98))
    ii, jj = torch.meshgrid(torch.arange(g), torch.arange(g), indexing='ij')
    losses, t0, prefix, fingerprint = [], time.time(), None, None
    model.train()
    for step in range(steps):
        p_easy = max(0.0, 1.0 - step / max(1.0, curriculum * steps))
        va, vb, offs = _vfm_views(step, batch, size, size + 2 * patch, patch, p_easy,
                                  fresh_colours=objective != 'vicreg')
        x = torch.cat([_to_tensor(va, mean, std), _to_tensor(vb, mean, std)])
        for grp in opt.param_groups:
            grp['lr'] = _lr_at(step, steps, lr, warmup)
        tok = model.forward_features(x)[:, npre:]  # [2B, g*g, D]
        ta, tb = tok[:batch], tok[batch:]  # [B, g*g, D] each
        # patch (i, j) of A covers layout pixels oa + p*(i, j); in B that is patch (i, j) + dA/p
        d = torch.from_numpy((offs[:, 0] - offs[:, 1]) // patch)  # [B, 2]
        bi = ii.reshape(1, -1) + d[:, :1]
        bj = jj.reshape(1, -1) + d[:, 1:]
        valid = (bi >= 0) & (bi < g) & (bj >= 0) & (bj < g)  # [B, g*g]
        tgt = (bi.clamp(0, g - 1) * g + bj.clamp(0, g - 1))
        if objective == 'detcon':
            regions = torch.from_numpy(np.stack([colour_regions(a, patch).reshape(-1) for a in va]))
            loss = _detcon_loss(ta, tb, regions, tgt, valid, head, tau)
        elif objective == 'cluster':
            st = cooccurrence_targets(np.concatenate([va, vb]), patch)[..., :len(COOC_OFFSETS)]
            ids = torch.cdist(torch.from_numpy(st).reshape(-1, len(COOC_OFFSETS)),
                              codebook).argmin(1)
            loss = F.cross_entropy(head(tok).reshape(-1, clusters), ids)
        elif objective == 'cooc':
            y = torch.from_numpy(cooccurrence_targets(np.concatenate([va, vb]), patch))
            y = (y.reshape(2 * batch, g * g, -1) - 0.5) * 4  # about unit scale
            loss = F.mse_loss(head(tok), y)
        else:
            za = ta[valid]                                                   # [M, D]
            zb = torch.gather(tb, 1, tgt.unsqueeze(-1).expand(-1, -1, tb.shape[-1]))[valid]
            loss = _vicreg(za, zb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step + 1 == prefix_steps:
            prefix = state_dict_sha256(model)
            fingerprint = state_fingerprint(model)
        if stop_after is not None and step + 1 >= stop_after:
            break
        if step % log_every == 0 or step == steps - 1:
            _log(logger, f'vfm step {step}/{steps} loss {loss.item():.4f} {time.time() - t0:.0f}s')
    model.eval()
    return model, dict(loss_first=losses[0], loss_last=float(np.mean(losses[-20:])),
                       seconds=round(time.time() - t0, 1), steps=len(losses),
                       prefix_steps=prefix_steps, prefix_sha256=prefix,
                       prefix_fingerprint=fingerprint)


def save_weights(model: torch.nn.Module, path: str, dtype: Optional[torch.dtype] = None) -> str:
    """Write the state dict as safetensors (optionally cast, e.g. fp16) atomically -> sha256."""
    from safetensors.torch import save_file

    from ..utils import atomic_write
    sd = {k: (v.detach().to(dtype) if dtype is not None and v.is_floating_point() else v.detach())
          .contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(sd, tmp))
    return file_sha256(path)


def file_sha256(path: str) -> str:
    """sha256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def update_manifest(path: str, key: str, entry: Dict) -> Dict:
    """Set ``manifest[key] = entry`` in the JSON file ``path`` (created if absent), atomically."""
    import os.path as osp

    from ..utils import atomic_write_text
    manifest = {}
    if osp.isfile(path):
        with open(path) as f:
            manifest = json.load(f)
    manifest[key] = entry
    atomic_write_text(path, json.dumps(manifest, indent=2, sort_keys=True) + '\n')
    return manifest
