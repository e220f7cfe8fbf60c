"""Image input / output without torch: reading images, listing folders, atomic PNG saves and
raw label-map images."""
import os
import os.path as osp
from typing import Iterable, List, Union

import numpy as np

from ..utils.atomic import atomic_write

__all__ = ['atomic_save', 'label_map_image', 'load_image', 'list_images', 'IMAGE_EXTENSIONS',
           'UnreadableImageError', 'check_image_file', 'output_stems']

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


class UnreadableImageError(ValueError):
    """An image file that exists but cannot be decoded (zero bytes, truncated, not an image,
    a symlink loop, no permission); the message names the file and the fix."""


def _unreadable(path: str, e: BaseException) -> UnreadableImageError:
    import errno
    if isinstance(e, OSError) and e.errno == errno.ELOOP:
        why = 'it is a symlink loop'
    elif osp.isfile(path) and osp.getsize(path) == 0:
        why = 'the file is empty (0 bytes)'
    elif 'truncated' in str(e):
        why = 'the file is truncated'
    elif type(e).__name__ == 'UnidentifiedImageError':
        why = 'it is not an image Pillow can read'
    else:
        why = str(e).replace(f"'{path}'", '').strip(' :') or type(e).__name__
    return UnreadableImageError(f'cannot read image {path!r}: {why}; replace or remove it')


def _to_rgb(im) -> np.ndarray:
    """A PIL image in any mode -> ``[H, W, 3]`` uint8 RGB, EXIF orientation applied.

    16-bit grey (``I;16*``, and ``I`` from PNG, which stores at most 16 bits) is scaled by
    1/257 (65535 -> 255): Pillow's own ``convert('RGB')`` clips it to white.  32-bit float
    (``F``) in 0..1 is scaled by 255, otherwise clipped to 0..255.
    """
    from PIL import ImageOps
    fmt = im.format
    im = ImageOps.exif_transpose(im)  # a copy with the orientation tag applied (if any)
    if im.mode.startswith('I;16') or im.mode == 'I':
        a = np.asarray(im).astype(np.float64)
        if im.mode == 'I' and fmt != 'PNG' and (not a.size or a.max() <= 255):
            grey = a  # a 32-bit integer image holding 8-bit values
        else:
            grey = np.clip(a, 0, 65535) / 257.0
        grey = np.clip(np.round(grey), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if im.mode == 'F':
        a = np.nan_to_num(np.asarray(im, dtype=np.float64))
        a = a * 255.0 if a.size and a.max() <= 1.0 else a
        grey = np.clip(np.round(a), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    return np.asarray(im.convert('RGB')).copy()


def check_image_file(path: str) -> None:
    """Cheap check that ``path`` is an image file (header only, nothing decoded).

    Raises:
        FileNotFoundError: ``path`` does not exist (a dangling symlink included).
        UnreadableImageError: zero bytes, not an image, a symlink loop, no permission.
    """
    from PIL import Image
    path = os.fspath(path)
    if not osp.lexists(path):
        raise FileNotFoundError(f'image {path!r} does not exist')
    try:
        with Image.open(path):
            pass
    except FileNotFoundError:
        raise FileNotFoundError(f'image {path!r} is a dangling symlink (its target does not '
                                'exist); fix or remove the link') from None
    except Exception as e:  # noqa: BLE001  (PIL raises OSError, SyntaxError, ValueError, ...)
        raise _unreadable(path, e) from None


def load_image(image) -> np.ndarray:
    """Path / PIL image / array -> ``[H, W, 3]`` uint8 RGB.

    Grey, palette, RGBA, CMYK are converted; 16-bit grey is scaled to 8 bits (not clipped);
    the EXIF orientation of files and PIL images is applied (the picture as viewers show it).

    Raises:
        ValueError: unsupported type, dtype or shape (message names the expected form).
        UnreadableImageError (a ValueError): a file that cannot be decoded (named).
        FileNotFoundError: a path that does not exist.
    """
    from PIL import Image
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        check_image_file(path)
        try:
            with Image.open(path) as im:
                im.load()
                return _to_rgb(im)
        except Exception as e:  # noqa: BLE001  (truncated data, decoder errors, bombs)
            raise _unreadable(path, e) from None
    if isinstance(image, Image.Image):
        return _to_rgb(image)
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
    """A folder (its image files, sorted, not recursive), one file, or an iterable of those.

    Folder entries are picked by extension (:data:`IMAGE_EXTENSIONS`, hidden files skipped),
    broken ones included: reading them reports them (:func:`check_image_file`) instead of
    skipping them silently.

    Raises:
        FileNotFoundError: a given path that does not exist (or a dangling symlink / loop).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out = []
    for p in paths:
        p = os.fspath(p)
        if osp.isdir(p):
            out += sorted(osp.join(p, f) for f in os.listdir(p)
                          if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith('.')
                          and not osp.isdir(osp.join(p, f)))
        elif osp.isfile(p):
            out.append(p)
        elif osp.islink(p):
            raise FileNotFoundError(f'{p!r} is a dangling symlink or a symlink loop; point it '
                                    'at an image file or a folder')
        else:
            raise FileNotFoundError(f'{p!r} is neither an image file nor a folder')
    return out


def output_stems(paths: Iterable[str]) -> List[str]:
    """Unique output name stems for input images, in input order.

    The stem is the file name without extension (``x.jpg`` -> ``x``).  Images whose stems
    collide (``x.jpg`` and ``x.png``, or ``a/x.png`` and ``b/x.png``) keep their extension
    (``x_jpg``, ``x_png``); what still collides gets ``_2``, ``_3`` ... in input order.  So no
    two inputs ever write the same output file.
    """
    paths = [os.fspath(p) for p in paths]
    stems = [osp.splitext(osp.basename(p))[0] for p in paths]
    counts: dict = {}
    for st in stems:
        counts[st] = counts.get(st, 0) + 1
    out, taken = [], set(st for st in stems if counts[st] == 1)
    for p, st in zip(paths, stems):
        if counts[st] == 1:
            out.append(st)
            continue
        ext = osp.splitext(p)[1].lstrip('.').lower()
        base = f'{st}_{ext}' if ext else st
        name, k = base, 1
        while name in taken:
            k += 1
            name = f'{base}_{k}'
        taken.add(name)
        out.append(name)
    return out
