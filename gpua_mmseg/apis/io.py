"""Image input / output without torch: reading images, listing folders, atomic PNG saves and
raw label-map images."""
import os
import os.path as osp
from typing import Iterable, List, Union

import numpy as np

from ..utils.atomic import atomic_write

__all__ = ['atomic_save', 'label_map_image', 'load_image', 'list_images', 'IMAGE_EXTENSIONS']

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def label_map_image(labels: np.ndarray, num_classes: int):
    """``[H, W]`` int labels -> PIL image holding the raw indices (no colours).

    8-bit grey ``'L'`` when ``num_classes <= 256``, else 16-bit ``'I;16'`` (up to 65536 classes).

    Raises:
        ValueError: negative labels, or labels/classes beyond 16 bits.
    """
    from PIL import Image
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f'labels must be [H, W], got shape {labels.shape}')
    if labels.size and labels.min() < 0:
        raise ValueError('labels must be >= 0 to be stored in a PNG')
    if num_classes <= 256 and (not labels.size or labels.max() < 256):
        return Image.fromarray(labels.astype(np.uint8), 'L')
    if num_classes > 65536 or (labels.size and labels.max() >= 65536):
        raise ValueError(f'{num_classes} classes do not fit a 16-bit PNG')
    return Image.fromarray(labels.astype(np.uint16))  # Pillow picks 16-bit grey 'I;16'


def atomic_save(image, path: str, **save_kw) -> str:
    """Save a PIL image with :func:`gpua_mmseg.utils.atomic_write` (``path`` never holds a
    half-written file; umask-respecting mode).  The format follows the extension."""
    path = osp.abspath(path)
    fmt = osp.splitext(path)[1].lstrip('.').upper()
    fmt = {'JPG': 'JPEG', 'TIF': 'TIFF'}.get(fmt, fmt or 'PNG')
    atomic_write(path, lambda tmp: image.save(tmp, format=fmt, **save_kw))
    return path


def load_image(image) -> np.ndarray:
    """Path / PIL image / array -> ``[H, W, 3]`` uint8 RGB (grey and RGBA are converted).

    Raises:
        ValueError: unsupported type, dtype or shape (message names the expected form).
        FileNotFoundError: a path that does not exist.
    """
    from PIL import Image
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if not osp.isfile(path):
            raise FileNotFoundError(f'image {path!r} does not exist')
        with Image.open(path) as im:
            return np.asarray(im.convert('RGB')).copy()
    if isinstance(image, Image.Image):
        return np.asarray(image.convert('RGB')).copy()
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f'image arrays must be uint8 0..255 RGB, got {image.dtype}; '
                             'convert 0..1 floats with (img * 255).round().astype(np.uint8)')
        if image.ndim == 2:
            return np.repeat(image[..., None], 3, axis=-1)
        if image.ndim == 3 and image.shape[-1] == 4:
            return np.ascontiguousarray(image[..., :3])
        if image.ndim == 3 and image.shape[-1] == 3:
            return np.ascontiguousarray(image)
        raise ValueError(f'image array must be HxWx3 RGB (HxW grey, HxWx4 RGBA accepted), got '
                         f'shape {image.shape}')
    raise ValueError(f'image must be a file path, a PIL image or a uint8 numpy array, got '
                     f'{type(image).__name__}')


def list_images(paths: Union[str, os.PathLike, Iterable]) -> List[str]:
    """A folder (its image files, sorted, not recursive), one file, or an iterable of those."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out = []
    for p in paths:
        p = os.fspath(p)
        if osp.isdir(p):
            out += sorted(osp.join(p, f) for f in os.listdir(p)
                          if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith('.'))
        elif osp.isfile(p):
            out.append(p)
        else:
            raise FileNotFoundError(f'{p!r} is neither an image file nor a folder')
    return out
