"""The layer compressor called through ctypes (so an image loads while its layer compresses) writes the bytes the
`deflate` package's own binding writes: the layer digest does not depend on which of the two ran (issue 28)."""

from __future__ import annotations

import os
import threading
import time

import deflate

from gosmall.build.compression import GZIP_LEVEL, _unlocked_gzip, gunzip, gzip
from tests.conftest import REPO


def test_the_unlocked_compressor_writes_the_bindings_bytes() -> None:
    unlocked = _unlocked_gzip()
    assert unlocked is not None  # the pinned package exports libdeflate's API
    samples = [b"", b"a", os.urandom(4096), bytes(3_000_000) + os.urandom(1_000_000), (REPO / "README.md").read_bytes() * 50]
    for data in samples:
        assert gzip(data) == unlocked(data) == bytes(deflate.gzip_compress(data, GZIP_LEVEL))
        assert gunzip(gzip(data)) == data


def test_another_thread_runs_while_a_layer_compresses() -> None:
    data = os.urandom(8_000_000) + bytes(16_000_000)
    counted = [0]
    stop = threading.Event()

    def count() -> None:
        while not stop.is_set():
            counted[0] += 1
            time.sleep(0.001)

    thread = threading.Thread(target=count)
    thread.start()
    try:
        before = counted[0]
        started = time.monotonic()
        gzip(data)
        took = time.monotonic() - started
        during = counted[0] - before
    finally:
        stop.set()
        thread.join()
    # Held through the call, the GIL would let the counter tick once at most (the binding never lets go); let go,
    # it ticks about every millisecond even on a busy machine. A count, not a time.
    assert during >= 10, (during, took)
