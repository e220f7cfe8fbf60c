"""Small pure-Python utilities shared by every layer (no torch / mm* imports)."""
from .atomic import atomic_write, atomic_write_bytes, atomic_write_text

__all__ = ['atomic_write', 'atomic_write_bytes', 'atomic_write_text']
