"""The layer compressor: gzip through libdeflate, whose bytes are part of every layer digest.

libdeflate comes through the `deflate` package, pinned exactly in pyproject.toml. Unlike isal,
whose bytes differ between AVX-512, AVX2 and SSE machines, its compressor has one code path on
every CPU (SIMD only in checksums and table set-up, which compute the same values):
tests/test_reproducible.py compares it under emulated CPUs. Level 6, its default, is 9 % smaller
than isal -3 and a little smaller than zlib -9, in about 0.2 s for a 7.5 MB layer
(benchmarks/results.md).

Its own module, apart from assemble: an up-to-date check names the compressor without loading
what assembling an image needs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

COMPRESSOR = "deflate"  # the PyPI distribution, as pinned; report.json and gosmall.lock name its version
GZIP_LEVEL = 6


def gzip(data: bytes) -> bytes:
    """One gzip member with libdeflate's fixed header: mtime 0, no name, OS byte 255 ("unknown"), on every host."""
    unlocked = _unlocked_gzip()
    if unlocked is not None:
        return unlocked(data)
    import deflate

    return bytes(deflate.gzip_compress(data, GZIP_LEVEL))


@functools.lru_cache(maxsize=1)
def _unlocked_gzip() -> Callable[[bytes], bytes] | None:
    """The same libdeflate, the one the `deflate` package carries, called through ctypes, which lets go of the GIL
    for the call (the package's binding holds it): an image is loaded into the engine on another thread while its
    layer compresses (pipeline.py). Same function, same level, same bytes (tests/build/test_compression_unlocked.py);
    None, and the package's binding, when the library does not export libdeflate's API."""
    from ..libdeflate import gzip_compressor

    return gzip_compressor(GZIP_LEVEL)


def gunzip(data: bytes) -> bytes:
    import deflate

    return bytes(deflate.gzip_decompress(data))


def compressor_id() -> str:
    """The compressor, its version and level: what decides a layer's compressed bytes besides the layer."""
    return f"{COMPRESSOR}-{compressor_version()}-{GZIP_LEVEL}"


@functools.lru_cache(maxsize=1)
def compressor_version() -> str:
    from importlib.metadata import version

    return version(COMPRESSOR)
