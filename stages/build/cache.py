"""gosmall's own cache: work that unchanged inputs need not redo, never able to change a digest.

Two kinds of entry, in `$GOSMALL_CACHE` (else `$XDG_CACHE_HOME/gosmall`, else `~/.cache/gosmall`):

- `go/<key>/<binary>`: `go build -o` output that lives on between builds, so Go's own up-to-date
  check can skip the link (with `-trimpath` Go's build ID is reproducible, so keeping it costs no
  reproducibility). The key is everything that decides the binary but the source, which Go checks.
  The build runs under a lock per key and the binary is copied out, so two builds at once never
  read a half-linked file.
- `layers/<diff_id>-<compressor>-<version>-<level>.gz`: a compressed layer, used only after it is
  decompressed and found to hash to its diff_id again, so a damaged entry is recompressed, never used.

Small facts remembered between runs live in `facts/<kind>/<key>.json` (what a `go` binary reported
about itself; what the last build of an output directory was made from): each is keyed by the
identity of the files it was read from, so a changed file is a miss, never a wrong answer.

`GOSMALL_CACHE=off` turns all of it off. Nothing outside this directory is written; entries are
replaced atomically (temp file and rename), so a killed build leaves no half-written entry.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from ..digest import Digest

ENV = "GOSMALL_CACHE"


def cache_root(environ: Mapping[str, str] | None = None) -> Path | None:
    """The cache directory, or None when `GOSMALL_CACHE=off`."""
    environ = os.environ if environ is None else environ
    configured = environ.get(ENV, "")
    if configured == "off":
        return None
    if configured:
        # Absolute: Go runs in the package's directory, and gosmall reads what it wrote from its own.
        return Path(configured).absolute()
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


def go_output_lock(key: str) -> Path | None:
    """The lock file of one kept `go build -o` target; None without a cache."""
    root = cache_root()
    return root / "go" / f"{key}.lock" if root is not None else None


@contextmanager
def go_output(key: str, held: IO[str] | None = None) -> Iterator[Path | None]:
    """A directory for one `go build -o` target, held under an exclusive lock; None without a cache.

    `held`: that lock, already taken (speculate.py took it when it started Go early); released here.
    """
    directory = _directory("go", key)
    if directory is None:
        yield None
        return
    with contextlib.ExitStack() as stack:
        lock = held if held is not None else stack.enter_context((directory.parent / f"{key}.lock").open("a"))
        if held is None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield directory
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def file_identity(path: Path) -> list[int] | None:
    """What changes when a file is rewritten or replaced: inode, size, mtime and ctime in ns (make and ninja look at less)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def remembered(kind: str, key: object) -> dict[str, object] | None:
    """The fact stored under `key`, or None (no cache, no entry, or an entry that does not parse)."""
    root = cache_root()
    if root is None:
        return None
    try:
        entry = json.loads((root / "facts" / kind / f"{key_of(key)}.json").read_bytes())
    except (OSError, ValueError):
        return None
    # The whole key is stored and compared: a hash prefix names the file, it does not decide the answer.
    if not isinstance(entry, dict) or entry.get("key") != json.loads(json.dumps(key, default=str)):
        return None
    value = entry.get("value")
    return value if isinstance(value, dict) else None


def remember(kind: str, key: object, value: Mapping[str, object]) -> None:
    """Store a fact atomically; a cache that cannot be written is no cache, not an error."""
    directory = _directory("facts", kind)
    if directory is None:
        return
    text = json.dumps({"key": key, "value": value}, default=str)
    try:
        handle, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    except OSError:
        return
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, directory / f"{key_of(key)}.json")
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)


SCRATCH_PREFIX = ".scratch-"


@contextmanager
def go_scratch(kept: Path) -> Iterator[Path]:
    """Go's work directory (GOTMPDIR) for a build into `kept`, on the kept output's file system.

    There Go's last step, moving the linked binary to `-o`, is a rename; across file systems it is a
    copy into the kept file in place, and a build killed mid-copy would leave a file with the right
    build ID in its head and a missing tail, which Go's next up-to-date check would take as current.
    Named with its owner, so a killed build's is removed by the next (leftovers.py).
    """
    from ..leftovers import make_owned_dir, owned_name_pattern, remove_stale

    remove_stale(kept.parent, owned_name_pattern(SCRATCH_PREFIX))
    scratch = make_owned_dir(kept.parent, SCRATCH_PREFIX)
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def copy_out(cached: Path, target: Path) -> None:
    """The kept binary at `target`, as it is now, for the rest of the build to read while others may relink it.

    A hard link where the two share a file system: Go replaces an output it relinks (it removes the old
    file and writes a new one), so the link keeps these bytes, and a 55 MB binary costs nothing to keep.
    Elsewhere, a copy.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(cached, target)
        return
    except OSError:
        pass
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
