"""Go's build cache shared through a registry: gosmall's own GOCACHEPROG program.

Go 1.24+ runs the command named by `GOCACHEPROG` as a child of `go build` and asks it, in JSON lines
on stdin and stdout (cmd/go/internal/cacheprog), to `get` and `put` the outputs of its actions
(compiling a package, linking). This module is that program (`python -m gosmall.build.gocache`,
started by compile.py when a remote cache is set) and the small part compile and the pipeline use
to start it and read what it did.

Where things live:
- On local disk, in `<gosmall cache>/gocache/`: `o/<output id>` holds an output's bytes (Go reads
  them in place: a `DiskPath` must be a file on local disk) and `a/<action id>` names the output
  an action made. Files are written to a temporary name and renamed, so processes sharing the
  directory (a build per platform) never see half a file.
- In the registry, in the one repository `remote_cache` names: every output is a blob, named by
  its sha256, which is Go's output ID. The action -> output mapping is one OCI manifest per
  image and platform, tagged `<os>-<arch>-<hash of Go, module, package, tags, cgo>`: its layers
  are the outputs that build used, each annotated with its action ID. A registry keeps,
  lists (`tags/list`) and deletes (`DELETE manifests/<digest>`) that as it does any image, and
  its garbage collector keeps exactly the blobs some index still names.

A build reads the index once, then fetches every output it names that is not on local disk,
at most LOOKUPS at a time, while Go starts: Go's gets are then answered from disk. Every blob
read back is hashed, and one whose sha256 is not its output ID is a miss, never used. A writing
build uploads each output it put (POST and PUT; over ASK_ABOVE, a HEAD first, and only when it is missing) while Go
works, and at `close` tags a new index of the outputs it used, unless that is the index it read.
Go's index of a source directory (DIRECTORY_INDEX) stays on local disk: no other runner could ask for it.

Never worse than no cache: the first failure to reach or use the registry (refused, 401/403,
5xx, too slow; every request has a total deadline) turns the remote part off for the rest of
the build, and Go compiles what it would have fetched. The program reports what happened in a
JSON file (`GoCacheStats`), which compile reads after `go build`; the pipeline says it once.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import hashlib
import json
import logging
import os
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures import wait as wait_for
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..config import remote_cache_repository
from ..errors import GosmallError

if TYPE_CHECKING:
    from ..registry.client import Answer, RegistryClient
    from ..reporter import Reporter

ENV = "GOSMALL_REMOTE_CACHE"  # HOST/REPO, or "off"; wins over [tool.gosmall] remote_cache
ENV_WRITE = "GOSMALL_REMOTE_CACHE_WRITE"  # "0": read only; wins over remote_cache_write
# What compile hands the program through Go's environment (Go passes its own to GOCACHEPROG).
PROGRAM_ENV = ("GOSMALL_GOCACHE_DIR", "GOSMALL_GOCACHE_REMOTE", "GOSMALL_GOCACHE_TAG", "GOSMALL_GOCACHE_WRITE",
               "GOSMALL_GOCACHE_INSECURE", "GOSMALL_GOCACHE_STATS", "GOSMALL_GOCACHE_PROGRESS")  # fmt: skip
# "1": say on stderr (which Go passes on) each package archive put or served, for the terminal's count (progress.py).
PROGRESS_ENV = "GOSMALL_GOCACHE_PROGRESS"
PROGRESS_LINE = "gosmall-gocache-progress: "  # then `put`, `local` or `remote`
ARCHIVE = b"!<arch>\n"  # a compiled package (Go's other outputs are its stdout, export data, build facts, the link)
# Go's index of one source directory (cmd/go/internal/modindex). Its action ID hashes each file's mtime (dirHash),
# which a checkout sets anew on every runner, so no other runner could ever ask for it: kept on local disk only.
DIRECTORY_INDEX = b"go index v2\n"

MEDIA_OUTPUT = "application/vnd.gosmall.go-cache.output.v1"
ARTIFACT_TYPE = "application/vnd.gosmall.go-cache.index.v1"
ACTION_ANNOTATION = "dev.gosmall.go-cache.action"
MEDIA_EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY = b"{}"
LOOKUPS = 8  # blobs fetched at once: enough to hide loopback and LAN latency, few enough not to flood a registry
UPLOADS = 4
# An output up to this size is uploaded without asking first (HEAD): a second copy of a small blob costs the
# registry less than the question, and a writer's outputs are mostly new. A bigger one is asked about first.
ASK_ABOVE = 1 << 20
REQUEST_TIMEOUT = 15.0  # seconds one registry request may take in all, connect to last byte
READ_WAIT = 300.0  # seconds Go's gets may wait for the registry in all, from the program's start
CLOSE_WAIT = 60.0  # seconds `close` waits for uploads still going before it gives up on them
MAX_ENTRIES = 20000  # outputs one index names at most (a manifest of ~5 MB)
MISSES_SHOWN = 20
# Trimming the local disk as Go trims its own cache (cmd/go/internal/cache: mtimeInterval, trimInterval, trimLimit).
MTIME_INTERVAL = 3600.0  # seconds: a used entry's mtime is refreshed at most this often, so mtimes say "last used"
TRIM_INTERVAL = 24 * 3600.0  # the directory is scanned at most once a day; trim.txt holds when it last was
TRIM_LIMIT = 5 * 24 * 3600.0  # an entry unused this long goes: Go found nearly all reuse comes within 5 days
TEMP_PREFIX = "gosmall-gocache-"  # this program's temporary files in tmp/ (older versions left mkstemp's "tmp…")


@dataclass(frozen=True)
class RemoteCache:
    """Where Go's outputs are shared: `repository` (HOST/REPO), and whether this build may write there."""

    repository: str
    write: bool = True
    insecure: tuple[str, ...] = ()

    @property
    def domain(self) -> str:
        return self.repository.split("/", 1)[0]

    @property
    def path(self) -> str:
        return self.repository.split("/", 1)[1]


def remote_cache_setting(
    configured: str | None, write: bool, environ: Mapping[str, str], insecure: Sequence[str] = ()
) -> RemoteCache | None:
    """The remote cache this run uses: GOSMALL_REMOTE_CACHE (or `off`) over [tool.gosmall] remote_cache; None for none."""
    said = environ.get(ENV, "").strip()
    if said == "off":
        return None
    repository = remote_cache_repository(said, f"{ENV}") if said else configured
    if repository is None:
        return None
    writes = environ.get(ENV_WRITE, "").strip()
    if writes not in ("", "0", "1", "false", "true"):
        raise GosmallError(f"{ENV_WRITE}={writes!r}: say 1 (write the shared Go cache) or 0 (only read it).")
    if writes:
        write = writes in ("1", "true")
    return RemoteCache(repository, write, tuple(insecure))


@dataclass(frozen=True)
class GoCacheStats:
    """What one `go build`'s cache program did; `trouble` is the first registry failure, after which it kept to local disk."""

    repository: str = ""
    write: bool = False
    gets: int = 0
    local_hits: int = 0
    remote_hits: int = 0
    misses: int = 0
    puts: int = 0
    uploaded: int = 0  # outputs put into the registry (not counting those it already had)
    bytes_down: int = 0
    bytes_up: int = 0
    index_written: bool = False
    damaged: int = 0  # outputs the index named that came back with other bytes (or not at all): misses
    trouble: str = ""
    missed: tuple[str, ...] = ()  # action IDs (hex) of the first misses, for -d
    trimmed: int = 0  # files unused for 5 days removed from the local disk (at most once a day)
    indexed: int = 0  # Go's indexes of a source directory, made and kept locally (DIRECTORY_INDEX): not misses

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "missed": list(self.missed)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GoCacheStats:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["missed"] = tuple(values.get("missed", ()))
        return cls(**values)


def index_tag(goos: str, goarch: str, variant: str, facts: Sequence[object]) -> str:
    """The tag of one image's and platform's index: readable platform, then a hash of what else decides most actions.

    ldflags are left out on purpose: they carry the version, which changes with every commit but
    touches only the link; Go's action IDs decide the rest, and a stale entry is only a miss.
    """
    digest = hashlib.sha256(json.dumps([goos, goarch, variant, *facts], default=str).encode()).hexdigest()[:32]
    return "-".join(p for p in (goos, goarch, variant, digest) if p)


def program_env(remote: RemoteCache, directory: Path, tag: str, stats: Path) -> dict[str, str]:
    """The variables that make `go build` run this program and tell it where to keep and share things."""
    return {
        "GOCACHEPROG": cache_program_command(),
        "GOSMALL_GOCACHE_DIR": str(directory),
        "GOSMALL_GOCACHE_REMOTE": remote.repository,
        "GOSMALL_GOCACHE_TAG": tag,
        "GOSMALL_GOCACHE_WRITE": "1" if remote.write else "0",
        "GOSMALL_GOCACHE_INSECURE": ",".join(remote.insecure),
        "GOSMALL_GOCACHE_STATS": str(stats),
    }


def cache_program_command() -> str:
    """GOCACHEPROG: this Python running this module. Go splits it on spaces, honouring single and double quotes."""
    exe = sys.executable
    quoted = exe if not any(c.isspace() for c in exe) else (f"'{exe}'" if "'" not in exe else f'"{exe}"')
    # -P (3.11+): the package directory Go runs in is not put first on sys.path, so no `gosmall` folder there shadows ours.
    isolate = " -P" if sys.version_info >= (3, 11) else ""
    return f"{quoted}{isolate} -m gosmall.build.gocache"


def read_stats(path: Path, remote: RemoteCache) -> GoCacheStats:
    try:
        return GoCacheStats.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return GoCacheStats(remote.repository, remote.write, trouble="the cache program did not report what it did.")


def total(stats: Sequence[GoCacheStats]) -> GoCacheStats:
    """Every platform's counts added up; the first trouble, and the first misses, kept."""
    added: dict[str, Any] = {}
    for f in fields(GoCacheStats):
        values = [getattr(s, f.name) for s in stats]
        if f.type in ("int", int):
            added[f.name] = sum(values)
        elif f.type in ("bool", bool):
            added[f.name] = any(values)
        elif f.type in ("str", str):
            added[f.name] = next((v for v in values if v), "")
        else:
            added[f.name] = tuple(m for v in values for m in v)[:MISSES_SHOWN]
    return GoCacheStats(**added)


def summary(stats: GoCacheStats) -> str:
    return (
        f"{stats.remote_hits} from the remote cache, {stats.uploaded} put there, "
        f"{_human(stats.bytes_down)} down, {_human(stats.bytes_up)} up"
    )


def report_entry(stats: GoCacheStats) -> dict[str, Any]:
    """report.json's `go_cache`: what this build took from and gave to the shared Go cache."""
    return {
        "repository": stats.repository,
        "write": stats.write,
        "actions_from_remote": stats.remote_hits,
        "actions_from_local": stats.local_hits,
        "actions_missed": stats.misses,  # looked up and not found: Go built it, or did without an optional entry
        "outputs_put": stats.uploaded,
        "bytes_down": stats.bytes_down,
        "bytes_up": stats.bytes_up,
        "fell_back": bool(stats.trouble),
    }


def tell(reporter: Reporter, name: str, remote: RemoteCache, stats: GoCacheStats) -> None:
    """One line for what the shared cache did; one warning when it failed; the misses under -d (`gosmall -d build-small`)."""
    reporter.step(f"{name}: Go actions: {summary(stats)} ({remote.repository}{'' if remote.write else ', read only'})")
    if stats.trouble:
        reporter.warn(
            f"The shared Go cache {remote.repository} could not be used, so Go compiled locally: {stats.trouble} "
            f"The build is the same without it; set {ENV}=off to stop trying."
        )
    elif stats.damaged:
        reporter.warn(
            f"The shared Go cache {remote.repository} served {stats.damaged} output(s) whose bytes do not match their sha256 "
            "(damaged or missing in the registry); Go compiled those locally. Writing the cache again repairs the index."
        )
    # Under -d only: invoke's --debug is what turns the root logger to DEBUG.
    if stats.trimmed and logging.getLogger().isEnabledFor(logging.DEBUG):
        reporter.detail(f"{name}: {stats.trimmed} local Go cache file(s) unused for 5 days removed")
    if stats.missed and logging.getLogger().isEnabledFor(logging.DEBUG):
        reporter.detail(
            f"{name}: Go cache misses (action IDs): {', '.join(stats.missed)}" + (" …" if stats.misses > len(stats.missed) else "")
        )


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


# -- the program Go runs --------------------------------------------------------


class _Store:
    """The local disk half: outputs by output ID, action entries by action ID.

    Trimmed as Go trims its own cache: every entry a build uses has its mtime refreshed (at most once an hour), and
    at most once a day (trim.txt) the entries unused for 5 days go. Only what this program writes is ever removed:
    regular files named by a 64-hex ID in a/ and o/, its temporary files in tmp/; never a link, a directory or any
    other name, and nothing below a link. Every program using the directory holds `lock` shared; the trim needs it
    alone (exclusive, without waiting), so no other `go build` (another platform, another run) is using an output it
    removes, and it runs at `close`, when this program's own `go build` is done with its outputs.
    """

    def __init__(self, root: Path, now: Callable[[], float] = time.time) -> None:
        self.root = root
        self.now = now
        self._users: IO[bytes] | None = None
        for part in ("o", "a", "tmp"):
            (root / part).mkdir(parents=True, exist_ok=True)

    def hold(self) -> None:
        """Say this program uses the directory (a shared lock on `lock`), waiting while another program trims it."""
        import fcntl

        self._users = (self.root / "lock").open("ab")
        fcntl.flock(self._users, fcntl.LOCK_SH)

    def mark_used(self, *paths: Path) -> None:
        """Refresh the mtime of entries this build uses, when over an hour old: one write an hour, not one per use."""
        now = self.now()
        for path in paths:
            with contextlib.suppress(OSError):
                if now - path.lstat().st_mtime >= MTIME_INTERVAL:
                    os.utime(path, follow_symlinks=False)

    def trim(self) -> int:
        """Remove the entries unused for TRIM_LIMIT, at most once per TRIM_INTERVAL; how many files went."""
        import fcntl

        now = self.now()
        stamp = self.root / "trim.txt"
        if _trimmed_lately(stamp, now):
            return 0
        if self._users is None:
            self._users = (self.root / "lock").open("ab")
        try:
            try:
                fcntl.flock(self._users, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return 0  # another program is using the directory: the next build alone in it trims
            with contextlib.suppress(OSError):  # stamped first, as Go does: a failed trim is not retried by every build
                self._write(stamp, f"{int(now)}\n".encode())
            # An hour more: a used entry's mtime may be that much older than its last use.
            cutoff = now - TRIM_LIMIT - MTIME_INTERVAL
            return (
                _remove_older(self.root / "a", cutoff, _is_hex_id)
                + _remove_older(self.root / "o", cutoff, _is_hex_id)
                + _remove_older(self.root / "tmp", cutoff, lambda name: name.startswith((TEMP_PREFIX, "tmp")))
            )
        finally:
            fcntl.flock(self._users, fcntl.LOCK_SH)  # a user again (a failed exclusive try may have dropped it)

    def output_path(self, output: str) -> Path:
        return self.root / "o" / output

    def has_output(self, output: str, size: int) -> bool:
        try:
            return self.output_path(output).stat().st_size == size
        except OSError:
            return False

    def action_path(self, action: str) -> Path:
        return self.root / "a" / action

    def lookup(self, action: str) -> tuple[str, int] | None:
        try:
            output, size = self.action_path(action).read_text(encoding="ascii").split()
            found = (output, int(size))
        except (OSError, ValueError):
            return None
        return found if _is_hex_id(output) and self.has_output(*found) else None

    def write_output(self, output: str, data: bytes) -> Path:
        path = self.output_path(output)
        if not self.has_output(output, len(data)):
            self._write(path, data)
        else:
            self.mark_used(path)
        return path

    def write_action(self, action: str, output: str, size: int) -> None:
        self._write(self.action_path(action), f"{output} {size}\n".encode())

    def _write(self, path: Path, data: bytes) -> None:
        handle, temporary = tempfile.mkstemp(dir=self.root / "tmp", prefix=TEMP_PREFIX)
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
            os.chmod(temporary, 0o644)
            os.replace(temporary, path)  # whole or not at all: Go may be reading the old one
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise


def _trimmed_lately(stamp: Path, now: float) -> bool:
    """trim.txt says a trim ran less than TRIM_INTERVAL ago (and not in the future: a clock set back trims)."""
    try:
        last = int(stamp.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return False
    return -MTIME_INTERVAL < now - last < TRIM_INTERVAL


def _remove_older(directory: Path, cutoff: float, ours: Callable[[str], bool]) -> int:
    """Remove the regular files in `directory` named as `ours` whose mtime is before `cutoff`; links and
    directories stay, and the directory is opened without following a link (O_NOFOLLOW), entries by its descriptor."""
    try:
        handle = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return 0
    removed = 0
    try:
        with os.scandir(handle) as entries:
            names = [e.name for e in entries if ours(e.name)]
        for name in names:
            with contextlib.suppress(OSError):
                found = os.stat(name, dir_fd=handle, follow_symlinks=False)
                if stat.S_ISREG(found.st_mode) and found.st_mtime < cutoff:
                    os.unlink(name, dir_fd=handle)
                    removed += 1
    finally:
        os.close(handle)
    return removed


class _RemoteTrouble(Exception):
    """The registry failed us: the remote half is off for the rest of the build."""


class _Remote:
    """The registry half: read the index, prefetch its outputs, upload new ones, tag a new index at close."""

    def __init__(self, client: RegistryClient, remote: RemoteCache, tag: str, store: _Store) -> None:
        self.client, self.remote, self.tag, self.store = client, remote, tag, store
        self.scope = f"repository:{remote.path}:pull" + (",push" if remote.write else "")
        self.trouble = ""
        self.damaged = 0
        self.bytes_down = 0
        self.bytes_up = 0
        self.uploaded = 0
        self.index_written = False
        self.known: set[str] = set()  # outputs the registry has (named by the index, or seen by HEAD or upload)
        self.index_entries: dict[str, tuple[str, int]] = {}
        self.fetches: dict[str, Future[bool]] = {}
        self.uploads: list[Future[None]] = []
        self.lock = threading.Lock()
        self.downloads = ThreadPoolExecutor(LOOKUPS, thread_name_prefix="gocache-get")
        self.senders = ThreadPoolExecutor(UPLOADS, thread_name_prefix="gocache-put")
        self.started = time.monotonic()
        self.index: Future[dict[str, tuple[str, int]]] = self.downloads.submit(self._read_index)

    # reading

    def lookup(self, action: str) -> tuple[str, int] | None:
        """The output `action` made, fetched and checked, or None: the registry does not have it (or could not say).

        Go waits for the registry at most READ_WAIT seconds in all: a registry that answers every request just
        inside its deadline, one after another, would otherwise hold the build for as long as it likes.
        """
        try:
            entry = self.index.result(timeout=self._left()).get(action)
            if entry is None:
                return None
            with self.lock:
                fetch = self.fetches.get(entry[0])
            if fetch is None or not fetch.result(timeout=self._left()):
                return None
        except FutureTimeout:
            self._fail(f"{self.remote.repository} was too slow: Go waited {READ_WAIT:g} s for it in all.")
            return None
        return entry

    def _left(self) -> float:
        return max(0.0, self.started + READ_WAIT - time.monotonic())

    def _read_index(self) -> dict[str, tuple[str, int]]:
        try:
            answer = self._call("GET", f"/v2/{self.remote.path}/manifests/{self.tag}", headers={"Accept": _MANIFEST})
            if answer.status_code == 404:
                return {}  # nobody wrote this image and platform yet: every get is a miss, and that is all
            if answer.status_code != 200:
                raise _RemoteTrouble(self._refused("reading the index", answer))
            entries = _parse_index(answer.content)
        except _RemoteTrouble as exc:
            self._fail(str(exc))
            return {}
        except (GosmallError, ValueError, KeyError, TypeError) as exc:
            self._fail(f"the index {self.remote.repository}:{self.tag} could not be read ({_said(exc)}).")
            return {}
        self.index_entries = entries
        outputs = {output: size for output, size in entries.values()}
        with self.lock:
            self.known.update(outputs)
            for output, size in sorted(outputs.items()):
                if self.store.has_output(output, size):
                    done: Future[bool] = Future()
                    done.set_result(True)
                    self.fetches[output] = done
                else:
                    self.fetches[output] = self.downloads.submit(self._fetch, output, size)
        return entries

    def _fetch(self, output: str, size: int) -> bool:
        """One output into the local store, if its bytes hash to its name."""
        if self.trouble:
            return False
        url = f"/v2/{self.remote.path}/blobs/sha256:{output}"
        from ..registry.client import MAX_BODY

        data = bytearray()
        try:
            while True:
                # Range requests keep every answer under the client's bound, however big the output.
                headers = {"Range": f"bytes={len(data)}-{min(size, len(data) + MAX_BODY) - 1}"} if size > MAX_BODY else {}
                answer = self._call("GET", url, headers=headers)
                if answer.status_code == 404:
                    break  # named by the index but gone (deleted, collected): a miss like a damaged one
                if answer.status_code not in (200, 206):
                    raise _RemoteTrouble(self._refused(f"getting output {output[:12]}", answer))
                data += answer.content
                if answer.status_code == 200 or not answer.content or len(data) >= size:
                    break
        except _RemoteTrouble as exc:
            self._fail(str(exc))
            return False
        except GosmallError as exc:
            self._fail(_said(exc))
            return False
        with self.lock:
            self.bytes_down += len(data)
        if len(data) != size or hashlib.sha256(data).hexdigest() != output:
            with self.lock:
                self.damaged += 1
                self.known.discard(output)  # upload it again if this build makes it
            return False
        self.store.write_output(output, bytes(data))
        return True

    # writing

    def send(self, output: str, path: Path) -> None:
        """Upload an output Go just put, unless the registry is known to have it."""
        if not self.remote.write or self.trouble:
            return
        with self.lock:
            if output in self.known:
                return
            self.known.add(output)  # one upload per output, however many actions made it
        self.uploads.append(self.senders.submit(self._upload, output, path))

    def _upload(self, output: str, path: Path) -> None:
        if self.trouble:
            return
        try:
            self._upload_blob(f"sha256:{output}", path.read_bytes())
        except _RemoteTrouble as exc:
            with self.lock:
                self.known.discard(output)
            self._fail(str(exc))
        except (GosmallError, OSError) as exc:
            with self.lock:
                self.known.discard(output)
            self._fail(_said(exc))

    def _upload_blob(self, digest: str, data: bytes) -> None:
        if len(data) > ASK_ABOVE:
            head = self._call("HEAD", f"/v2/{self.remote.path}/blobs/{digest}")
            if head.status_code == 200:
                return
            if head.status_code != 404:
                raise _RemoteTrouble(self._refused("checking for a blob", head))
        started = self._call("POST", f"/v2/{self.remote.path}/blobs/uploads/")
        if started.status_code != 202 or "Location" not in started.headers:
            raise _RemoteTrouble(self._refused("starting an upload", started))
        from urllib.parse import urljoin

        from ..registry.client import registry_base

        base = registry_base(self.remote.domain, self.client.insecure) + f"/v2/{self.remote.path}/blobs/uploads/"
        location = urljoin(base, started.headers["Location"])
        url = location + ("&" if "?" in location else "?") + f"digest={digest}"
        done = self._call("PUT", url, headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(data))}, data=data)
        if done.status_code != 201:
            raise _RemoteTrouble(self._refused("uploading a blob", done))
        with self.lock:
            self.uploaded += 1
            self.bytes_up += len(data)

    def finish(self, used: Mapping[str, tuple[str, int]]) -> None:
        """At close: stop prefetching, let uploads end, and tag the index of what this build used if it is new."""
        self.downloads.shutdown(wait=False, cancel_futures=True)
        finished = wait_for(self.uploads, timeout=CLOSE_WAIT)
        if finished.not_done:
            self._fail(f"uploading to {self.remote.repository} took more than {CLOSE_WAIT:g} s; the rest was left out.")
        self.senders.shutdown(wait=False, cancel_futures=True)
        if not self.remote.write or self.trouble or not self.index.done():
            return
        with self.lock:
            entries = {a: e for a, e in used.items() if e[0] in self.known}
        if not entries or entries == self.index_entries:
            return  # what this build used is what the registry already says: nothing to write
        try:
            self._upload_blob(_EMPTY_DIGEST, EMPTY)
            manifest = _index_manifest(entries, self.tag)
            answer = self._call(
                "PUT", f"/v2/{self.remote.path}/manifests/{self.tag}", headers={"Content-Type": _MEDIA_MANIFEST}, data=manifest
            )
            if answer.status_code not in (200, 201):
                raise _RemoteTrouble(self._refused("tagging the index", answer))
            self.index_written = True
        except _RemoteTrouble as exc:
            self._fail(str(exc))
        except GosmallError as exc:
            self._fail(_said(exc))

    # both

    def _call(self, method: str, url: str, *, headers: Mapping[str, str] | None = None, data: bytes | None = None) -> Answer:
        from ..registry.client import raise_if_unavailable

        def once() -> Answer:
            if self.trouble:
                raise _RemoteTrouble(self.trouble)  # already given up: no more waiting on this registry
            answer = self.client.request(method, self.remote.domain, url, self.scope, headers=headers, data=data)
            return raise_if_unavailable(answer, f"{method} {self.remote.repository}")

        try:
            return self.client.retrying(once)
        except _RemoteTrouble:
            raise
        except GosmallError as exc:
            raise _RemoteTrouble(_said(exc)) from None

    def _refused(self, what: str, answer: Answer) -> str:
        from ..redact import redact

        hint = {401: " Log in to it (docker login) or check the credentials.", 403: " The credentials may not use that repository."}
        return (
            f"{what} in {self.remote.repository} failed with HTTP {answer.status_code} ({redact(answer.text, limit=200) or 'no body'})."
            + hint.get(answer.status_code, "")
        )

    def _fail(self, message: str) -> None:
        with self.lock:
            if not self.trouble:
                self.trouble = message


_MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_MANIFEST = _MEDIA_MANIFEST
_EMPTY_DIGEST = "sha256:" + hashlib.sha256(EMPTY).hexdigest()


def _index_manifest(entries: Mapping[str, tuple[str, int]], tag: str) -> bytes:
    """The index as an OCI artifact manifest: one layer per action, sorted, so equal indexes are equal bytes."""
    layers = [
        {"mediaType": MEDIA_OUTPUT, "digest": f"sha256:{output}", "size": size, "annotations": {ACTION_ANNOTATION: action}}
        for action, (output, size) in sorted(entries.items())[:MAX_ENTRIES]
    ]
    document = {
        "schemaVersion": 2,
        "mediaType": _MEDIA_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": MEDIA_EMPTY, "digest": _EMPTY_DIGEST, "size": len(EMPTY)},
        "layers": layers,
        "annotations": {"dev.gosmall.go-cache.index": tag},
    }
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def _parse_index(content: bytes) -> dict[str, tuple[str, int]]:
    document = json.loads(content)
    entries: dict[str, tuple[str, int]] = {}
    for layer in document["layers"]:
        action = str(layer.get("annotations", {}).get(ACTION_ANNOTATION, ""))
        digest = str(layer["digest"])
        size = layer["size"]
        # Anything else is some other document under our tag: not ours to use.
        if _is_hex_id(action) and digest.startswith("sha256:") and _is_hex_id(digest[7:]) and isinstance(size, int) and size >= 0:
            entries[action] = (digest[7:], size)
    return entries


def _is_hex_id(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _said(exc: BaseException, limit: int = 300) -> str:
    """The error on one line, redacted, cut in the middle: its end often names the fix (`--insecure-registry HOST`)."""
    from ..redact import redact

    text = redact(str(exc), limit=100_000)
    return text if len(text) <= limit else f"{text[: limit // 2 - 1].rstrip()} … {text[-(limit // 2 - 2) :].lstrip()}"


@dataclass
class _Server:
    """One `go build`'s cache: answers Go's requests in the order they come, gets that wait on the registry in threads."""

    store: _Store
    remote: _Remote | None
    out: IO[bytes]
    stats_path: Path | None
    trouble: str = ""  # why there is no remote half although one was asked for
    progress: bool = False  # say each package archive on stderr (PROGRESS_ENV)
    trimmed: int = 0  # files the close's trim removed from the local disk
    counts: dict[str, int] = field(
        default_factory=lambda: {"gets": 0, "local_hits": 0, "remote_hits": 0, "misses": 0, "puts": 0, "indexed": 0}
    )
    missed: list[str] = field(default_factory=list)
    used: dict[str, tuple[str, int]] = field(default_factory=dict)  # action -> output this build got or put
    said: set[str] = field(default_factory=set)  # actions already counted on stderr: Go may ask for one twice
    lock: threading.Lock = field(default_factory=threading.Lock)
    write_lock: threading.Lock = field(default_factory=threading.Lock)

    def serve(self, requests: Iterator[tuple[dict[str, Any], bytes | None]]) -> None:
        self._answer({"ID": 0, "KnownCommands": ["get", "put", "close"]})
        waiting = ThreadPoolExecutor(LOOKUPS * 2, thread_name_prefix="gocache-wait")
        try:
            for request, body in requests:
                command, ident = request.get("Command"), int(request.get("ID", 0))
                if command == "get":
                    action = _hex(request.get("ActionID"))
                    if not self._get_local(ident, action):
                        waiting.submit(self._answering, ident, functools.partial(self._get_remote, action))
                elif command == "put":
                    self._answering(ident, functools.partial(self._put, request, body or b""))
                elif command == "close":
                    waiting.shutdown(wait=True)
                    self._close()
                    self._answer({"ID": ident})
                    return
                else:
                    self._answer({"ID": ident, "Err": f"unknown command {command!r}"})
        finally:
            waiting.shutdown(wait=False, cancel_futures=True)
            self._write_stats()

    def _answering(self, ident: int, work: Callable[[], dict[str, Any]]) -> None:
        try:
            answer = work()
        except Exception as exc:  # noqa: BLE001 - Go gets the error for this request; the build goes on
            answer = {"Err": f"gosmall cache program: {_said(exc)}"}
        self._answer({"ID": ident, **answer})

    def _get_local(self, ident: int, action: str) -> bool:
        with self.lock:
            self.counts["gets"] += 1
        found = self.store.lookup(action) if _is_hex_id(action) else None
        if found is None:
            if self.remote is not None:
                return False
            self._answer({"ID": ident, **self._miss(action)})
            return True
        self._answer({"ID": ident, **self._hit(action, found, "local_hits")})
        return True

    def _get_remote(self, action: str) -> dict[str, Any]:
        assert self.remote is not None
        found = self.remote.lookup(action) if _is_hex_id(action) else None
        if found is None:
            return self._miss(action)
        self.store.write_action(action, *found)
        return self._hit(action, found, "remote_hits")

    def _hit(self, action: str, found: tuple[str, int], kind: str) -> dict[str, Any]:
        output, size = found
        self.store.mark_used(self.store.action_path(action), self.store.output_path(output))  # not trimmed while in use
        with self.lock:
            self.counts[kind] += 1
            self.used[action] = found
        if self.progress:
            self._say_package(action, "remote" if kind == "remote_hits" else "local", self.store.output_path(output))
        return {"OutputID": _b64(output), "Size": size, "DiskPath": str(self.store.output_path(output))}

    def _miss(self, action: str) -> dict[str, Any]:
        with self.lock:
            self.counts["misses"] += 1
            if len(self.missed) < MISSES_SHOWN:
                self.missed.append(action)
        return {"Miss": True}

    def _put(self, request: Mapping[str, Any], body: bytes) -> dict[str, Any]:
        action, output = _hex(request.get("ActionID")), _hex(request.get("OutputID"))
        if not _is_hex_id(action) or not _is_hex_id(output):
            raise ValueError("a put without a 32-byte ActionID and OutputID")
        if hashlib.sha256(body).hexdigest() != output:
            raise ValueError(f"the body of output {output[:12]} does not hash to its OutputID")
        path = self.store.write_output(output, body)
        self.store.write_action(action, output, len(body))
        if body.startswith(DIRECTORY_INDEX):
            with self.lock:  # Go asked for it first, and that was counted a miss: it is none a cache could have served
                self.counts["indexed"] += 1
                self.counts["misses"] = max(0, self.counts["misses"] - 1)
                if action in self.missed:
                    self.missed.remove(action)
            return {"DiskPath": str(path)}  # neither uploaded nor named in the index: see DIRECTORY_INDEX
        with self.lock:
            self.counts["puts"] += 1
            self.used[action] = (output, len(body))
        if self.progress:
            self._say_package(action, "put", body)
        if self.remote is not None:
            self.remote.send(output, path)
        return {"DiskPath": str(path)}

    def _say_package(self, action: str, kind: str, output: bytes | Path) -> None:
        if isinstance(output, Path):
            try:
                with output.open("rb") as stream:
                    output = stream.read(len(ARCHIVE))
            except OSError:
                return
        if not output.startswith(ARCHIVE):
            return
        with self.lock:
            if action in self.said:
                return
            self.said.add(action)
        # One write of one short line: whole even when Go writes its own lines to the same pipe at once.
        os.write(2, f"{PROGRESS_LINE}{kind}\n".encode())

    def _close(self) -> None:
        if self.remote is not None:
            with self.lock:
                used = dict(self.used)
            self.remote.finish(used)
        # Before answering: Go kills this program once `close` is answered, and its build no longer reads outputs.
        with contextlib.suppress(OSError):
            self.trimmed = self.store.trim()

    def _answer(self, message: Mapping[str, Any]) -> None:
        line = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        with self.write_lock:
            self.out.write(line)
            self.out.flush()

    def _write_stats(self) -> None:
        if self.stats_path is None:
            return
        remote = self.remote
        with self.lock:
            stats = GoCacheStats(
                repository=remote.remote.repository if remote else "",
                write=remote.remote.write if remote else False,
                **self.counts,
                uploaded=remote.uploaded if remote else 0,
                bytes_down=remote.bytes_down if remote else 0,
                bytes_up=remote.bytes_up if remote else 0,
                index_written=remote.index_written if remote else False,
                damaged=remote.damaged if remote else 0,
                trouble=remote.trouble if remote else self.trouble,
                missed=tuple(self.missed),
                trimmed=self.trimmed,
            )
        temporary = self.stats_path.with_name(self.stats_path.name + ".tmp")
        with contextlib.suppress(OSError):
            temporary.write_text(json.dumps(stats.to_json()), encoding="utf-8")
            os.replace(temporary, self.stats_path)


def _hex(value: object) -> str:
    """An ID as Go sends it (JSON []byte: base64) as lowercase hex; "" when it is not one."""
    if not isinstance(value, str):
        return ""
    try:
        return base64.b64decode(value, validate=True).hex()
    except (binascii.Error, ValueError):
        return ""


def _b64(hex_id: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_id)).decode()


def _read_requests(stream: IO[bytes]) -> Iterator[tuple[dict[str, Any], bytes | None]]:
    """Go's requests: a JSON object per line, a put's body on the next non-empty line as a base64 JSON string."""
    while True:
        line = stream.readline()
        if not line:
            return
        if not line.strip():
            continue  # Go's encoder ends each object with a newline, then Go writes another
        request = json.loads(line)
        body = None
        if request.get("Command") == "put" and int(request.get("BodySize", 0)) > 0:
            text = stream.readline()
            while text and not text.strip():
                text = stream.readline()
            body = base64.b64decode(json.loads(text))
            if len(body) != int(request["BodySize"]):
                raise ValueError("a put body of another size than its BodySize")
        yield request, body


def main() -> int:
    environ = os.environ
    directory = environ.get("GOSMALL_GOCACHE_DIR", "")
    stats = environ.get("GOSMALL_GOCACHE_STATS", "")
    if not directory:
        sys.stderr.write("gosmall's Go cache program is started by gosmall (GOSMALL_GOCACHE_DIR is not set).\n")
        return 2
    store = _Store(Path(directory))
    store.hold()
    remote, trouble = None, ""
    repository = environ.get("GOSMALL_GOCACHE_REMOTE", "")
    if repository:
        insecure = tuple(filter(None, environ.get("GOSMALL_GOCACHE_INSECURE", "").split(",")))
        setting = RemoteCache(repository, environ.get("GOSMALL_GOCACHE_WRITE") == "1", insecure)
        try:
            remote = _Remote(_client(setting), setting, environ.get("GOSMALL_GOCACHE_TAG", "latest"), store)
        except GosmallError as exc:  # the Docker config or a credential helper: local disk only, and say why
            trouble = _said(exc)
    server = _Server(
        store, remote, sys.stdout.buffer, Path(stats) if stats else None, trouble=trouble, progress=environ.get(PROGRESS_ENV) == "1"
    )
    try:
        server.serve(_read_requests(sys.stdin.buffer))
    except (ValueError, KeyError, OSError) as exc:
        # Go stops the build when its cache program goes away; compile.py then builds again without it.
        sys.stderr.write(f"gosmall's Go cache program stopped: {_said(exc)}\n")
        return 1
    finally:
        sys.stdout.flush()
    # Go waits for this process's stdout to close. Prefetches no get asked for may still be running: they
    # are not waited for (interpreter exit would join their threads), since the stats are written.
    sys.stderr.flush()
    os._exit(0)


def _client(setting: RemoteCache) -> RegistryClient:
    from ..registry.client import RegistryClient

    client = RegistryClient.from_environment(insecure=setting.insecure)
    # One quick second try for a blip; a registry that is down costs a second or two, not the build's time.
    client.timeout, client.attempts, client.backoff = REQUEST_TIMEOUT, 2, 0.25
    return client


if __name__ == "__main__":
    sys.exit(main())
