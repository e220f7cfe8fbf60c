"""The one atomic file writer of gpua_mmseg (pure Python: the alignment core may import it).

``atomic_write(path, write_fn)`` calls ``write_fn(tmp)`` on a temporary file in the same folder
and renames it onto ``path``, so ``path`` is either the old file or the complete new one, never
half-written.  The result gets the mode a plain ``open(path, 'w')`` would give (``0o666`` minus
the umask: 0644 under umask 022), not ``mkstemp``'s 0600.  On any failure (including
``KeyboardInterrupt``) the temporary file is removed.  Temporary files left by a killed process
(``kill -9``: no ``finally`` runs) are named after its pid and removed by the next write to the
same folder once that process is gone.
"""
import os
import os.path as osp
import re
import shutil
import tempfile
import time
from typing import Callable

__all__ = ['atomic_write', 'atomic_write_text', 'atomic_write_bytes', 'atomic_directory',
           'current_umask']

# '.<target>.<pid>.<random>.tmp'
_TMP_RE = re.compile(r'^\..+\.(\d+)\.[A-Za-z0-9_]+\.tmp$')
_LEGACY_MAX_AGE_S = 24 * 3600  # '.<target>.<random>.tmp' of older versions carry no pid


def current_umask() -> int:
    """The process umask (read without changing it where ``/proc`` allows)."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's) or unknown: leave its file alone
    return True


def _remove_stale_tmps(folder: str) -> None:
    """Best effort: delete temp files of dead writers in ``folder`` (never raises)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    now = time.time()
    for name in names:
        if not (name.startswith('.') and name.endswith('.tmp')):
            continue
        full = osp.join(folder, name)
        m = _TMP_RE.match(name)
        try:
            if m is not None and int(m.group(1)) > 0 and name.count('.') >= 4:
                stale = not _pid_alive(int(m.group(1)))
            else:
                stale = now - os.path.getmtime(full) > _LEGACY_MAX_AGE_S
            if stale and osp.isdir(full) and not osp.islink(full):
                shutil.rmtree(full, ignore_errors=True)
            elif stale and osp.isfile(full):
                os.remove(full)
        except (OSError, ValueError):
            pass


def atomic_write(path: str, write_fn: Callable[[str], None]) -> None:
    """Write ``path`` atomically: ``write_fn(tmp_path)`` then ``os.replace(tmp_path, path)``.

    Args:
        path: target file; its folder is created if needed.
        write_fn: writes the complete content to the file path it is given (it may reopen or
            replace that file, e.g. ``safetensors.torch.save_file``).

    Raises:
        Whatever ``write_fn`` or the file system raises; ``path`` is then unchanged and no
        temporary file is left behind.
    """
    path = osp.abspath(os.fspath(path))
    folder = osp.dirname(path)
    os.makedirs(folder, exist_ok=True)
    _remove_stale_tmps(folder)
    fd, tmp = tempfile.mkstemp(prefix=f'.{osp.basename(path)}.{os.getpid()}.', suffix='.tmp',
                               dir=folder)
    os.close(fd)
    try:
        write_fn(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


def atomic_write_bytes(path: str, data: bytes) -> None:
    """:func:`atomic_write` of a bytes object."""
    def write(tmp):
        with open(tmp, 'wb') as f:
            f.write(data)
    atomic_write(path, write)


def atomic_write_text(path: str, text: str, encoding: str = 'utf-8') -> None:
    """:func:`atomic_write` of a string."""
    atomic_write_bytes(path, text.encode(encoding))


def atomic_directory(path: str, write_fn: Callable[[str], None], overwrite: bool = False) -> None:
    """The folder version of :func:`atomic_write`: ``write_fn(tmp_dir)`` fills a temporary
    sibling folder, which then replaces ``path`` (``path`` is absent/old or complete).

    The folder gets ``0o777`` minus the umask (``mkdtemp`` creates 0700).

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False (checked before writing).
    """
    path = osp.abspath(os.fspath(path))
    parent = osp.dirname(path)
    if osp.exists(path) and not overwrite:
        raise FileExistsError(f'{path} already exists; remove it or allow overwriting')
    os.makedirs(parent, exist_ok=True)
    _remove_stale_tmps(parent)
    tmp = tempfile.mkdtemp(prefix=f'.{osp.basename(path)}.{os.getpid()}.', suffix='.tmp',
                           dir=parent)
    try:
        write_fn(tmp)
        os.chmod(tmp, 0o777 & ~current_umask())
        if osp.exists(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
