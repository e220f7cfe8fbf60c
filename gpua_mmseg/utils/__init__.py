"""Small pure-Python utilities shared by every layer (no torch / mm* imports)."""
from .atomic import atomic_directory, atomic_write, atomic_write_bytes, atomic_write_text

__all__ = ['atomic_directory', 'atomic_write', 'atomic_write_bytes', 'atomic_write_text']
