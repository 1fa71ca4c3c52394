"""The one ctypes binding to libdeflate: the library the pinned `deflate` package carries, called directly where
its Python binding falls short.

The binding holds the GIL while it compresses (build/compression.py loads an image beside that work), and its
`gzip_decompress` stops after the first gzip member without saying how much input it read, so it cannot tell one
member from several (images/source.py must, or a second member would hide files from audit and vulns).
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable

_SUCCESS = 0  # enum libdeflate_result


@functools.cache
def _library() -> ctypes.CDLL | None:
    """The shared object with libdeflate's API set up for the calls below; None when it does not export them."""
    from deflate import _deflate

    try:
        library = ctypes.CDLL(_deflate.__file__)
        library.libdeflate_alloc_compressor.restype = ctypes.c_void_p
        library.libdeflate_alloc_compressor.argtypes = [ctypes.c_int]
        library.libdeflate_gzip_compress_bound.restype = ctypes.c_size_t
        library.libdeflate_gzip_compress_bound.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        library.libdeflate_gzip_compress.restype = ctypes.c_size_t
        library.libdeflate_gzip_compress.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t]
        library.libdeflate_free_compressor.restype = None
        library.libdeflate_free_compressor.argtypes = [ctypes.c_void_p]
        library.libdeflate_alloc_decompressor.restype = ctypes.c_void_p
        library.libdeflate_alloc_decompressor.argtypes = []
        library.libdeflate_gzip_decompress_ex.restype = ctypes.c_int
        library.libdeflate_gzip_decompress_ex.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.POINTER(ctypes.c_size_t),
            ctypes.POINTER(ctypes.c_size_t),
        ]
        library.libdeflate_free_decompressor.restype = None
        library.libdeflate_free_decompressor.argtypes = [ctypes.c_void_p]
    except (OSError, AttributeError):
        return None
    return library


def gzip_compressor(level: int) -> Callable[[bytes], bytes] | None:
    """One gzip member at `level`, with the GIL let go for the call; None when the library is not usable this way."""
    library = _library()
    if library is None:
        return None

    def compress(data: bytes) -> bytes:
        compressor = library.libdeflate_alloc_compressor(level)
        if not compressor:
            raise MemoryError("libdeflate could not allocate a compressor")
        try:
            size = library.libdeflate_gzip_compress_bound(compressor, len(data))
            out = ctypes.create_string_buffer(size)
            written = library.libdeflate_gzip_compress(compressor, data, len(data), out, size)
            if not written:  # cannot happen with the bound's room; never a truncated layer
                raise MemoryError("libdeflate's gzip output did not fit its own bound")
            return out.raw[:written]
        finally:
            library.libdeflate_free_compressor(compressor)

    return compress


def gunzip_one_member(data: bytes, limit: int) -> bytes | None:
    """`data` decompressed when it is exactly one whole, intact gzip member of at most `limit` bytes (CRC and size
    checked by libdeflate); None for anything else: several members, trailing bytes, a size field over `limit` or
    wrong, damage, or no usable library. The caller reads those another way, or refuses them."""
    library = _library()
    if library is None or len(data) < 18:
        return None
    size = int.from_bytes(data[-4:], "little")  # ISIZE: the size mod 2**32, so only a hint until libdeflate agrees
    if size > limit:
        return None
    decompressor = library.libdeflate_alloc_decompressor()
    if not decompressor:
        return None
    try:
        out = ctypes.create_string_buffer(max(size, 1))
        read, written = ctypes.c_size_t(0), ctypes.c_size_t(0)
        result = library.libdeflate_gzip_decompress_ex(decompressor, data, len(data), out, size, ctypes.byref(read), ctypes.byref(written))
    finally:
        library.libdeflate_free_decompressor(decompressor)
    if result != _SUCCESS or read.value != len(data) or written.value != size:
        return None
    return out.raw[:size]
