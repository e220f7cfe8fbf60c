"""Input validation and small numeric helpers shared by the alignment modules (pure torch)."""
import math
from typing import Callable, Iterator, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
#: A re-iterable feature source: a callable that returns a fresh iterator of chunks.
ChunkSource = Callable[[], Iterator]


def l2n(x: Tensor, dim: int = -1) -> Tensor:
    """L2-normalise along ``dim`` (zero vectors stay zero instead of becoming NaN)."""
    return F.normalize(x, dim=dim, eps=1e-12)


def flush_subnormal_(x: Tensor) -> Tensor:
    """Set the subnormal entries of a non-negative ``x`` (|x| < the dtype's smallest normal) to
    0, in place, and return ``x``.

    Why: the softmax / OT plans of the fit (eps = 0.05, temperature 100) leave a few per cent
    of their entries subnormal, and a CPU GEMM that reads subnormals runs ~50x slower (measured:
    ``v^T P`` on an 8192 x 171 plan, 0.77 s instead of 0.016 s -- 9/10 of a 1e6-patch fit).
    ``torch.set_flush_denormal`` only sets the calling thread's flags, not the GEMM worker
    threads', so the values themselves are flushed.  The change is below 1.2e-38 per entry.
    """
    if x.is_floating_point():
        x.masked_fill_(x < torch.finfo(x.dtype).tiny, 0.0)
    return x


def check_positive(cfg, names, owner: str) -> None:
    """Every field in ``names`` of the config ``cfg`` must be a finite number > 0."""
    for n in names:
        v = getattr(cfg, n)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or not v > 0:
            raise ValueError(f'{owner}.{n} must be a finite number > 0, got {v!r}')


def check_nonneg(cfg, names, owner: str) -> None:
    """Every field in ``names`` must be a finite number >= 0."""
    for n in names:
        v = getattr(cfg, n)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or v < 0:
            raise ValueError(f'{owner}.{n} must be a finite number >= 0, got {v!r}')


def check_int(cfg, names, minimum: int, owner: str) -> None:
    """Every field in ``names`` must be an integer >= ``minimum``."""
    for n in names:
        v = getattr(cfg, n)
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise ValueError(f'{owner}.{n} must be an integer >= {minimum}, got {v!r}')


def check_matrix(name: str, x, dim: Optional[int] = None, min_rows: int = 1,
                 check_finite: bool = True) -> Tensor:
    """Validate a 2-D floating feature matrix and return it as a tensor.

    Raises:
        ValueError: wrong type/dtype/rank, too few rows, mismatching width or non-finite values;
            the message names the argument and how to fix it.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f'{name} must be a torch.Tensor of shape [N, D], got {type(x).__name__}; '
                         'convert with torch.as_tensor(x, dtype=torch.float32)')
    if not torch.is_floating_point(x):
        raise ValueError(f'{name} must be a floating-point tensor (float16/bfloat16/float32/'
                         f'float64), got {x.dtype}; cast it with .float()')
    if x.dim() != 2:
        raise ValueError(f'{name} must be 2-D [N, D], got shape {tuple(x.shape)}; '
                         'flatten patch grids with x.reshape(-1, D)')
    if x.shape[0] < min_rows:
        raise ValueError(f'{name} has {x.shape[0]} rows but at least {min_rows} are needed')
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f'{name} has feature dimension {x.shape[1]} but {dim} was expected '
                         '(do the features and prototypes come from the same models?)')
    if check_finite and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).any(dim=1).sum())
        raise ValueError(f'{name} contains NaN/Inf values in {bad} row(s); drop or repair them '
                         'before fitting')
    return x


def check_prototypes(prototypes, dc: Optional[int] = None) -> Tensor:
    """Validate the text prototypes [K, dc]; K = 0 is rejected with a clear message."""
    if isinstance(prototypes, torch.Tensor) and prototypes.dim() == 2 and prototypes.shape[0] == 0:
        raise ValueError('prototypes is empty (K = 0): pass at least one class-name embedding')
    return check_matrix('prototypes', prototypes, dim=dc)


def as_labels(name: str, labels, n: int, k: int) -> Tensor:
    """Validate integer labels [n] in [0, k)."""
    if not isinstance(labels, torch.Tensor):
        labels = torch.as_tensor(labels)
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise ValueError(f'{name} must be an integer tensor of prototype indices, got {labels.dtype}')
    labels = labels.reshape(-1).long()
    if labels.numel() != n:
        raise ValueError(f'{name} has {labels.numel()} entries but there are {n} paired features')
    if n and (int(labels.min()) < 0 or int(labels.max()) >= k):
        raise ValueError(f'{name} must lie in [0, {k}) (K = {k} prototypes), got range '
                         f'[{int(labels.min())}, {int(labels.max())}]')
    return labels


class FeatureStream:
    """Uniform view over in-memory tensors or a re-iterable source of chunks.

    Args:
        feats: a tuple of tensors ``(x1 [N, d1], x2 [N, d2], ...)`` with equal N, or a callable
            returning a fresh iterator of tuples of chunks ``(x1_chunk, x2_chunk, ...)``.
        dims: expected widths of each member (None = not checked).
        chunk_size: rows per chunk when slicing in-memory tensors.
        device: where chunks are moved (float32).

    Every pass validates chunks, so NaN/Inf or width mismatches in a streamed source are caught.
    """

    def __init__(self, feats: Union[Sequence[Tensor], ChunkSource], dims: Sequence[Optional[int]],
                 names: Sequence[str], chunk_size: int = 65536,
                 device: Union[str, torch.device, None] = None):
        self.dims = list(dims)
        self.names = list(names)
        self.chunk_size = int(chunk_size)
        if callable(feats) and not isinstance(feats, torch.Tensor):
            self._source = feats
            self.tensors = None
            self.device = torch.device(device) if device is not None else torch.device('cpu')
            self.n = None
        else:
            tensors = list(feats)
            for t, d, nm in zip(tensors, self.dims, self.names):
                check_matrix(nm, t, dim=d)
            n = {t.shape[0] for t in tensors}
            if len(n) != 1:
                raise ValueError('paired features must have the same number of rows, got '
                                 + ', '.join(f'{nm}: {t.shape[0]}'
                                             for nm, t in zip(self.names, tensors)))
            self.tensors = tensors
            self._source = None
            self.n = n.pop()
            self.device = torch.device(device) if device is not None else tensors[0].device

    def __iter__(self) -> Iterator[Tuple[int, Tuple[Tensor, ...]]]:
        """Yield ``(row_offset, (chunk1, chunk2, ...))`` in float32 on ``self.device``."""
        if self.tensors is not None:
            for s in range(0, self.n, self.chunk_size):
                yield s, tuple(t[s:s + self.chunk_size].to(self.device, torch.float32)
                               for t in self.tensors)
            return
        offset = 0
        for chunk in self._source():
            if isinstance(chunk, torch.Tensor):
                chunk = (chunk,)
            if len(chunk) != len(self.dims):
                raise ValueError(f'the feature source must yield tuples of {len(self.dims)} '
                                 f'tensors ({", ".join(self.names)}), got {len(chunk)}')
            for t, d, nm in zip(chunk, self.dims, self.names):
                check_matrix(nm + ' chunk', t, dim=d)
            if len({t.shape[0] for t in chunk}) != 1:
                raise ValueError('chunks of paired features must have equal row counts')
            out = tuple(t.to(self.device, torch.float32) for t in chunk)
            yield offset, out
            offset += out[0].shape[0]
        if self.n is None:
            self.n = offset
        elif offset != self.n:
            raise ValueError(f'the feature source yielded {offset} rows on this pass but {self.n} '
                             'on the first one; it must be deterministic and re-iterable')
