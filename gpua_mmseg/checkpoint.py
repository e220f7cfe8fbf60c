"""Reading user-supplied checkpoints without ever running code from them.

A pickle can execute arbitrary code while it is read (``__reduce__``), and MMEngine's
``CheckpointLoader`` calls ``torch.load`` without ``weights_only``: under
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` (and on every torch < 2.6, where that is the default) a
malicious ``--checkpoint`` ran its payload.  :func:`load_checkpoint_file` is the one reader for
checkpoints given by users:

* ``.safetensors`` (recognised by content, not by name): tensors only, nothing to execute;
* ``torch.save`` files: ``torch.load(weights_only=True)`` -- passed explicitly, so the
  ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` override does not apply -- with a small allowlist so that
  MMEngine Runner checkpoints still load: numpy arrays / scalars (no object dtype) in ``meta``,
  and the ``message_hub``'s ``HistoryBuffer`` objects, which are replaced by inert placeholders
  (their bound-method references resolve to ``None``; evaluation never needs them);
* refused: TorchScript archives (their code would be compiled and run), pickle-based files on
  torch < 2.6 (CVE-2025-32434: ``weights_only=True`` could be bypassed up to torch 2.5.1), and
  anything else that needs a Python global outside the allowlist.

:func:`register_mmengine_loaders` puts this reader behind MMEngine's local-path and
``http(s)://`` schemes, so MMSeg's own ``tools/test.py``, ``mim test`` and ``load_from`` in our
configs use it too.  ``gpua_mmseg.models`` calls it on import (configs import that module
through ``custom_imports``).  All errors are :class:`CheckpointError` (a ``ValueError``) whose
message names the file and the fix.
"""
import os
import os.path as osp
import re
import struct
import zipfile
from typing import Any, Dict, Optional

import torch

__all__ = ['CheckpointError', 'load_checkpoint_file', 'register_mmengine_loaders',
           'PICKLE_MIN_TORCH']

# First torch whose weights_only unpickler has no known bypass (CVE-2025-32434).
PICKLE_MIN_TORCH = (2, 6)

_FIX = ('give a .safetensors file or a torch.save() of tensors (a state_dict, or a Runner '
        "checkpoint dict with 'state_dict' and 'meta')")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read safely; the message names the file and the fix."""


def _torch_version() -> tuple:
    parts = []
    for p in torch.__version__.split('+')[0].split('.')[:2]:
        digits = ''.join(ch for ch in p if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def is_safetensors_file(path: str) -> bool:
    """True when ``path`` starts like a safetensors file (u64 header size, then a JSON '{')."""
    try:
        with open(path, 'rb') as f:
            head = f.read(9)
            size = osp.getsize(path)
    except OSError:
        return False
    if len(head) < 9:
        return False
    (n,) = struct.unpack('<Q', head[:8])
    return head[8:9] == b'{' and 8 + n <= size


def is_torchscript_archive(path: str) -> bool:
    """True for a TorchScript zip (it holds ``constants.pkl`` / ``code/``)."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith('constants.pkl') or '/code/' in n for n in names)


class _InertObject:
    """Stands in for an allowlisted non-tensor class (e.g. ``HistoryBuffer``); keeps nothing."""

    def __setstate__(self, state):
        pass


def _inert_getattr(obj, name):
    # Pickles of HistoryBuffer reference its statistics methods via getattr(cls, 'mean');
    # only that form is accepted, and it resolves to nothing.
    if obj is _InertObject:
        return None
    raise CheckpointError(f'getattr({type(obj).__name__}, {name!r}) is not allowed in a '
                          'checkpoint')


def _safe_globals():
    allowed = [(_InertObject, 'mmengine.logging.history_buffer.HistoryBuffer'),
               (_inert_getattr, 'builtins.getattr')]
    try:
        import numpy as np
    except ImportError:  # numpy-free installs: tensors only
        return allowed
    try:
        from numpy._core import multiarray
        mod = 'numpy._core.multiarray'
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
        mod = 'numpy.core.multiarray'
    # Both numpy module spellings resolve to the same functions (files saved by numpy 1 or 2).
    for m in {mod, 'numpy.core.multiarray', 'numpy._core.multiarray'}:
        allowed += [(multiarray._reconstruct, f'{m}._reconstruct'),
                    (multiarray.scalar, f'{m}.scalar')]
    allowed += [np.ndarray, np.dtype]
    # Concrete dtype classes (numpy >= 1.25 pickles them); never the object dtype, whose
    # arrays are rebuilt from arbitrary objects.
    allowed += sorted({type(np.dtype(t)) for t in set(np.sctypeDict.values())
                       if np.dtype(t).kind != 'O'}, key=lambda c: c.__name__)
    return allowed


def _load_safetensors(path: str, map_location) -> Dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    device = map_location if isinstance(map_location, str) else 'cpu'
    try:
        return dict(load_file(path, device=device))
    except Exception as e:  # SafetensorError is not an OSError / ValueError
        raise CheckpointError(f'checkpoint {path!r} is a corrupt or truncated .safetensors file '
                              f'({type(e).__name__}: {e}); re-export or re-download it') from e


def _load_pickle(path: str, map_location) -> Any:
    if _torch_version() < PICKLE_MIN_TORCH:
        raise CheckpointError(
            f'checkpoint {path!r} is a pickle-based torch file, and torch {torch.__version__} '
            'cannot read those without possibly running code from them (CVE-2025-32434); '
            f'install torch>={".".join(map(str, PICKLE_MIN_TORCH))} or convert the file to '
            '.safetensors on a trusted machine')
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # UnpicklingError, RuntimeError (not a zip / truncated), EOFError...
        msg = str(e)
        glob = re.search(r'GLOBAL ([\w.]+)', msg) or re.search(r"got <class '([\w.]+)'>", msg)
        if glob:
            raise CheckpointError(
                f'checkpoint {path!r} needs the Python object {glob.group(1)!r} to be unpickled, '
                f'which could run code, so it was not loaded; {_FIX}') from None
        first = msg.strip().splitlines()[0] if msg.strip() else type(e).__name__
        raise CheckpointError(f'could not read checkpoint {path!r} ({type(e).__name__}: '
                              f'{first[:200]}); {_FIX}') from None


def load_checkpoint_file(path: str, map_location: Optional[Any] = 'cpu') -> Dict[str, Any]:
    """Read a local checkpoint without executing anything stored in it.

    Args:
        path: ``.safetensors`` or ``torch.save`` file (a state dict, or a dict with
            ``'state_dict'`` and optionally ``'meta'`` / ``'message_hub'`` as MMEngine writes).
        map_location: as for ``torch.load`` (a device string for safetensors).

    Returns:
        The stored dict (for safetensors: the flat ``{name: tensor}`` state dict).

    Raises:
        FileNotFoundError: ``path`` is not an existing file.
        CheckpointError: the file is corrupt, not a checkpoint, or would need code to load.
    """
    path = osp.expanduser(os.fspath(path))
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint {path!r} does not exist (or is not a file); '
                                'check the --checkpoint / load_from path')
    if osp.getsize(path) == 0:
        raise CheckpointError(f'checkpoint {path!r} is empty (0 bytes); re-export or '
                              're-download it')
    if is_safetensors_file(path) or path.endswith('.safetensors'):
        return _load_safetensors(path, map_location)
    if is_torchscript_archive(path):
        raise CheckpointError(f'checkpoint {path!r} is a TorchScript archive (code, not just '
                              'weights), which is never loaded as a checkpoint; export its '
                              'state_dict() to .safetensors on a trusted machine')
    ckpt = _load_pickle(path, map_location)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f'checkpoint {path!r} holds a {type(ckpt).__name__}, not a dict '
                              f'of tensors; {_FIX}')
    return ckpt


# ------------------------------------------------------------------ MMEngine integration
# MMEngine logs ``__name__[10:]`` as the backend name, hence the ``load_from_`` prefix.
def load_from_local_safe(filename, map_location=None):
    return load_checkpoint_file(filename, map_location)


def load_from_http_safe(filename, map_location=None, model_dir=None, progress=None):
    """Download once into torch's hub cache (``TORCH_HOME``), then the safe reader."""
    from urllib.parse import urlparse

    from torch.hub import download_url_to_file, get_dir
    model_dir = model_dir or osp.join(get_dir(), 'checkpoints')
    os.makedirs(model_dir, exist_ok=True)
    cached = osp.join(model_dir, osp.basename(urlparse(filename).path))
    if not osp.isfile(cached):
        download_url_to_file(filename, cached, progress=bool(progress))
    return load_checkpoint_file(cached, map_location)


_REGISTERED = False


def register_mmengine_loaders() -> None:
    """Make MMEngine's ``CheckpointLoader`` read local paths and ``http(s)://`` URLs with
    :func:`load_checkpoint_file` (idempotent).  Other schemes (``open-mmlab://``, ``s3://``, ...)
    keep MMEngine's loaders; no gpua_mmseg config uses them."""
    global _REGISTERED
    if _REGISTERED:
        return
    from mmengine.runner import CheckpointLoader
    CheckpointLoader.register_scheme(prefixes='', loader=load_from_local_safe, force=True)
    CheckpointLoader.register_scheme(prefixes=('http://', 'https://'), loader=load_from_http_safe,
                                     force=True)
    _REGISTERED = True
