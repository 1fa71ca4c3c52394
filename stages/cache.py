"""gosmall's own cache: work that unchanged inputs need not redo, never able to change a digest.

Two kinds of entry, in `$GOSMALL_CACHE` (else `$XDG_CACHE_HOME/gosmall`, else `~/.cache/gosmall`):

- `go/<key>/<binary>`: `go build -o` output that lives on between builds, so Go's own up-to-date
  check can skip the link (with `-trimpath` Go's build ID is reproducible, so keeping it costs no
  reproducibility). The key is everything that decides the binary but the source, which Go checks.
  The build runs under a lock per key and the binary is copied out, so two builds at once never
  read a half-linked file.
- `layers/<diff_id>-<compressor>-<version>-<level>.gz`: a compressed layer, used only after it is
  decompressed and found to hash to its diff_id again, so a damaged entry is recompressed, never used.

`GOSMALL_CACHE=off` turns both off. Nothing outside this directory is written; entries are
replaced atomically (temp file and rename), so a killed build leaves no half-written entry.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from .digest import Digest

ENV = "GOSMALL_CACHE"


def cache_root(environ: Mapping[str, str] | None = None) -> Path | None:
    """The cache directory, or None when `GOSMALL_CACHE=off`."""
    environ = os.environ if environ is None else environ
    configured = environ.get(ENV, "")
    if configured == "off":
        return None
    if configured:
        return Path(configured)
    base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gosmall"


def _directory(*parts: str) -> Path | None:
    root = cache_root()
    if root is None:
        return None
    directory = root.joinpath(*parts)
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError:
        return None  # an unwritable cache is no cache, not an error
    return directory


def key_of(facts: object) -> str:
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:32]


@contextmanager
def go_output(key: str) -> Iterator[Path | None]:
    """A directory for one `go build -o` target, held under an exclusive lock; None without a cache."""
    directory = _directory("go", key)
    if directory is None:
        yield None
        return
    with (directory.parent / f"{key}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield directory
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def copy_out(cached: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cached, target)
    os.chmod(target, 0o755)


def compressed_layer(
    tar: bytes, diff_id: Digest, tag: str, compress: Callable[[bytes], bytes], decompress: Callable[[bytes], bytes]
) -> bytes:
    """`compress(tar)`, from the cache when an entry decompresses back to `diff_id`."""
    directory = _directory("layers")
    if directory is None:
        return compress(tar)
    path = directory / f"{diff_id.hex}-{tag}.gz"
    try:
        cached = path.read_bytes()
        if Digest.of(decompress(cached)) == diff_id:
            return cached
    except Exception:  # noqa: BLE001 - a missing or damaged entry is simply recompressed
        pass
    data = compress(tar)
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".tmp-", delete=False) as stream:
            stream.write(data)
        os.replace(stream.name, path)
    except OSError:
        pass
    return data
