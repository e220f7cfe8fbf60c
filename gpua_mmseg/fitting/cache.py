"""On-disk, resumable cache of paired CLIP / VFM patch features (safetensors shards).

Layout::

    <root>/<key>/manifest.json            what was extracted (fingerprint, image count, shards)
    <root>/<key>/shard_000000.safetensors  images [0, images_per_shard), rows of all their crops
    ...

``key`` is a hash of the fingerprint (models, weights digest, sliding window, dataset, dtype), so
two configurations never share shards and a cache can be reused across runs.  A shard is written
to a temporary file and renamed into place: a shard file that exists is complete.  Killing the
extraction and re-running therefore only computes the missing shards, and since a shard's content
depends only on its images and the weights, the resumed cache equals an uninterrupted one bit for
bit.  No shard is ever rewritten, so several ranks can fill disjoint shards of one cache at once.

Shard tensors (``R`` rows = patches of all crops of the shard's images, in image / crop / row-major
patch order):

* ``clip``  ``[R, dc]`` CLIP patch embeddings (joint space, not normalised), cache dtype;
* ``vfm``   ``[R, dv]`` VFM patch tokens on the CLIP patch grid (not normalised), cache dtype;
* ``image`` ``[R]`` int64 dataset index of the row's image;
* ``label`` ``[R]`` int64 majority class of the patch's pixels (255 ignored), -1 if none / no mask.
"""
import hashlib
import json
import math
import os
import os.path as osp
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch

from ..utils.atomic import atomic_write

__all__ = ['FeatureCache', 'fingerprint_key']

Tensor = torch.Tensor
_DTYPES = {'float16': torch.float16, 'bfloat16': torch.bfloat16, 'float32': torch.float32}
_MANIFEST = 'manifest.json'


def fingerprint_key(fingerprint: Dict[str, Any]) -> str:
    """16 hex chars identifying a fingerprint dict (JSON with sorted keys)."""
    text = json.dumps(fingerprint, sort_keys=True, default=str)
    return hashlib.sha256(text.encode('utf-8')).hexdigest()[:16]


class FeatureCache:
    """Shards of paired features for ``n_images`` dataset images.

    Args:
        root: cache folder (created if needed); the shards go into ``root/<key>``.
        fingerprint: JSON-able description of everything the features depend on.
        n_images: number of images (dataset indices ``0 .. n_images - 1``).
        images_per_shard: images per shard file (>= 1).
        dtype: storage dtype name, ``'float16'`` (default, half the disk), ``'bfloat16'`` or
            ``'float32'``; fitting always reads float32.

    Raises:
        ValueError: bad arguments, or an existing manifest under the same key that disagrees
            (e.g. a hash collision or a hand-edited folder).
    """

    def __init__(self, root: str, fingerprint: Dict[str, Any], n_images: int,
                 images_per_shard: int = 1, dtype: str = 'float16', create: bool = True):
        if int(n_images) < 1:
            raise ValueError(f'the feature cache needs at least one image, got n_images={n_images}')
        if int(images_per_shard) < 1:
            raise ValueError(f'images_per_shard must be >= 1, got {images_per_shard}')
        if dtype not in _DTYPES:
            raise ValueError(f'cache dtype must be one of {sorted(_DTYPES)}, got {dtype!r}')
        self.fingerprint = dict(fingerprint, n_images=int(n_images),
                                images_per_shard=int(images_per_shard), dtype=dtype)
        self.key = fingerprint_key(self.fingerprint)
        self.dir = osp.join(osp.abspath(osp.expanduser(root)), self.key)
        self.n_images = int(n_images)
        self.images_per_shard = int(images_per_shard)
        self.dtype = _DTYPES[dtype]
        self.n_shards = math.ceil(self.n_images / self.images_per_shard)
        if create:
            self._write_or_check_manifest()

    # ------------------------------------------------------------------ layout
    @property
    def manifest_path(self) -> str:
        return osp.join(self.dir, _MANIFEST)

    def shard_path(self, shard: int) -> str:
        return osp.join(self.dir, f'shard_{shard:06d}.safetensors')

    def shard_images(self, shard: int) -> range:
        """Dataset indices covered by ``shard``."""
        if not 0 <= shard < self.n_shards:
            raise ValueError(f'shard {shard} out of range [0, {self.n_shards})')
        start = shard * self.images_per_shard
        return range(start, min(start + self.images_per_shard, self.n_images))

    def has_shard(self, shard: int) -> bool:
        return osp.isfile(self.shard_path(shard))

    def shards_of_rank(self, rank: int = 0, world_size: int = 1) -> List[int]:
        """Shards this rank extracts: ``rank, rank + world, ...`` (DistributedSampler-style
        interleaving, without padding: every shard belongs to exactly one rank)."""
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f'rank {rank} is not in [0, world_size={world_size})')
        return list(range(rank, self.n_shards, world_size))

    def shard_problem(self, shard: int) -> Optional[str]:
        """Why the existing file of ``shard`` is unusable (truncated, not safetensors, other
        tensors or another cache's shard), or None if it looks complete.  Reads the header only:
        safetensors checks that the data covers it exactly, so truncation is caught."""
        from safetensors import safe_open
        try:
            with safe_open(self.shard_path(shard), 'pt') as f:
                keys, meta = set(f.keys()), f.metadata() or {}
        except Exception as e:  # noqa: BLE001  (SafetensorError is no OSError)
            return str(e).splitlines()[0] if str(e) else type(e).__name__
        if keys != {'clip', 'vfm', 'image', 'label'}:
            return f'tensors {sorted(keys)}, expected clip, vfm, image, label'
        if meta.get('key') != self.key or meta.get('shard') != str(shard):
            return 'it belongs to another cache or shard'
        return None

    def drop_corrupt_shards(self, rank: int = 0, world_size: int = 1) -> List[Tuple[int, str]]:
        """Remove this rank's shard files that :meth:`shard_problem` rejects, so that the
        extraction writes them again; returns ``(shard, problem)`` of each one removed."""
        dropped = []
        for s in self.shards_of_rank(rank, world_size):
            if self.has_shard(s):
                problem = self.shard_problem(s)
                if problem is not None:
                    os.remove(self.shard_path(s))
                    dropped.append((s, problem))
        return dropped

    def missing_shards(self, rank: int = 0, world_size: int = 1) -> List[int]:
        return [s for s in self.shards_of_rank(rank, world_size) if not self.has_shard(s)]

    def is_complete(self) -> bool:
        return not self.missing_shards()

    def _write_or_check_manifest(self) -> None:
        manifest = dict(format=1, key=self.key, n_shards=self.n_shards,
                        fingerprint=self.fingerprint)
        old = None
        if osp.isfile(self.manifest_path):
            try:
                with open(self.manifest_path, encoding='utf-8') as f:
                    old = json.load(f)
            except (OSError, ValueError):
                old = None  # unreadable: rewritten below (it is derived from the fingerprint)
            old = old if isinstance(old, dict) else None
        if old is not None:
            if old.get('key') != self.key or old.get('n_shards') != self.n_shards:
                raise ValueError(f'feature cache {self.dir} has a manifest for another '
                                 'configuration; delete that folder or use another --cache-dir')
            return
        text = json.dumps(manifest, sort_keys=True, indent=1, default=str)

        def write(tmp):
            with open(tmp, 'w', encoding='utf-8') as f:
                f.write(text)
        atomic_write(self.manifest_path, write)

    # ------------------------------------------------------------------ io
    def write_shard(self, shard: int, clip: Tensor, vfm: Tensor, image: Tensor,
                    label: Tensor) -> None:
        """Store one shard atomically (temp file + rename).

        Args:
            clip: ``[R, dc]``; vfm: ``[R, dv]``; image, label: ``[R]`` integer.
        """
        from safetensors.torch import save_file
        n = clip.shape[0]
        if clip.ndim != 2 or vfm.ndim != 2 or vfm.shape[0] != n or image.shape != (n,) \
                or label.shape != (n,):
            raise ValueError(f'shard {shard}: clip {tuple(clip.shape)}, vfm {tuple(vfm.shape)}, '
                             f'image {tuple(image.shape)}, label {tuple(label.shape)} must be '
                             '[R, dc], [R, dv], [R], [R] with the same R')
        tensors = dict(clip=clip.detach().to('cpu', self.dtype).contiguous(),
                       vfm=vfm.detach().to('cpu', self.dtype).contiguous(),
                       image=image.detach().to('cpu', torch.int64).contiguous(),
                       label=label.detach().to('cpu', torch.int64).contiguous())
        meta = dict(key=self.key, shard=str(shard))
        atomic_write(self.shard_path(shard), lambda tmp: save_file(tensors, tmp, metadata=meta))

    def read_shard(self, shard: int) -> Dict[str, Tensor]:
        """``dict(clip, vfm, image, label)`` of one shard (storage dtype, CPU)."""
        from safetensors.torch import load_file
        path = self.shard_path(shard)
        if not osp.isfile(path):
            raise FileNotFoundError(f'feature shard {path} is missing; re-run the extraction '
                                    '(tools/fit_alignment.py resumes where it stopped)')
        try:
            return load_file(path)
        except Exception as e:  # noqa: BLE001  (SafetensorError is no OSError)
            raise ValueError(f'feature shard {path} is corrupt ({str(e).splitlines()[0]}); '
                             're-run: the fit removes and re-extracts corrupt shards') from None

    def iter_shards(self) -> Iterator[Tuple[int, Dict[str, Tensor]]]:
        for s in range(self.n_shards):
            yield s, self.read_shard(s)

    def chunk_source(self, rows_per_chunk: int = 65536, keys: Tuple[str, ...] = ('vfm', 'clip')
                     ) -> Callable[[], Iterator[Tuple[Tensor, ...]]]:
        """A re-iterable source for the fitters: each call returns a fresh iterator of tuples of
        float32 (integer for ``image`` / ``label``) chunks ``[<= rows_per_chunk, D]``.

        Memory holds one shard plus one chunk, independently of the number of images.
        """
        if rows_per_chunk < 1:
            raise ValueError(f'rows_per_chunk must be >= 1, got {rows_per_chunk}')

        def convert(k, t):
            return t if k in ('image', 'label') else t.float()

        def source():
            buf: List[List[Tensor]] = [[] for _ in keys]
            n_buf = 0
            for _, shard in self.iter_shards():
                parts = [shard[k] for k in keys]
                start = 0
                n = parts[0].shape[0]
                while start < n:
                    take = min(rows_per_chunk - n_buf, n - start)
                    for b, p in zip(buf, parts):
                        b.append(p[start:start + take])
                    n_buf += take
                    start += take
                    if n_buf == rows_per_chunk:
                        yield tuple(convert(k, torch.cat(b)) for k, b in zip(keys, buf))
                        buf, n_buf = [[] for _ in keys], 0
            if n_buf:
                yield tuple(convert(k, torch.cat(b)) for k, b in zip(keys, buf))
        return source

    def __repr__(self) -> str:
        done = sum(self.has_shard(s) for s in range(self.n_shards))
        return f'FeatureCache({self.dir!r}, {done}/{self.n_shards} shards)'
