"""Stage: the shared libraries a cgo binary needs on scratch, read from its ELF.

`collect_libraries` reads the binary's PT_INTERP, DT_NEEDED, DT_RPATH and
DT_RUNPATH with pyelftools and resolves every library the way glibc's ld.so
does, without running anything: `ldd` executes the loader, so it cannot look
at a binary for another architecture and it answers for the host, not for a
sysroot. The result is every file and symlink the image needs, at the same
absolute path as on the host, so the image's tree is the host's.

How paths are represented (what the layer builder must reproduce):

* Every entry's parent directory is a real directory in the image: no
  component of it is a symlink. The builder creates missing parents as plain
  directories and writes each entry as what it says it is.
* A symlink met anywhere on the way to a library, directory or file, is its
  own entry of kind "symlink" with the link text exactly as on the host. On a
  merged-/usr host `/lib` is the entry `/lib -> usr/lib`, and libc is the file
  `/usr/lib/x86_64-linux-gnu/libc.so.6`; the loader named
  `/lib64/ld-linux-x86-64.so.2` becomes `/lib64 -> usr/lib64`,
  `/usr/lib64/ld-linux-x86-64.so.2 -> /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2`
  and the real file under `/usr/lib/x86_64-linux-gnu/`.
* Since no entry lives below a symlink, the entries can be written in any
  order, and sorting them by path is enough for a reproducible layer. A
  closure that would break this (a library beside the binary landing on a
  path that root has as a symlink) is refused with a GosmallError.
* Libraries the binary finds through its own `$ORIGIN` are read from its
  directory on the host and placed at the same relative spot next to
  `binary_image_path`; everything else is read from `root` at its image path.

Search order, as in glibc's `_dl_map_object` (LD_LIBRARY_PATH is ignored on
purpose: the build host's environment must not change the image):

1. a DT_NEEDED with a '/' is a path, used as is;
2. a name already loaded (by the name it was asked for or its DT_SONAME) is
   not searched again;
3. unless the requesting object has DT_RUNPATH: the DT_RPATH of the
   requesting object, then of the object that loaded it, up to the binary;
4. `search_paths`, where LD_LIBRARY_PATH would be, so that setting
   LD_LIBRARY_PATH to them in the image makes the runtime agree;
5. the requesting object's own DT_RUNPATH (never inherited);
6. unless DF_1_NODEFLIB: the directories of /etc/ld.so.conf (standing in for
   ld.so.cache, which is built from them), then the machine's default
   directories.

A candidate whose ELF class, byte order or machine differ from the binary's is
skipped, as ld.so skips it, and named in the error if nothing fits.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import re
import shutil
import subprocess
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..elf import ElfError, ElfIdent, NotElfError, multiarch_triplet, read_elf_file, read_elf_ident
from ..errors import GosmallError
from ..layer_files import READ_ONLY, SYMLINK, file_mode, read_regular_file
from ..leftovers import owned_temporary_directory

Reason = Literal["interp", "needed", "nss", "libs"]
Kind = Literal["file", "symlink"]

# glibc loads these with dlopen when Go's cgo os/user and net packages call
# getpwuid_r or getaddrinfo; no ELF header names them.
NSS_LIBRARIES = ("libnss_files.so.2", "libnss_dns.so.2")
NSSWITCH_PATH = "/etc/nsswitch.conf"
# Only the modules we ship, so glibc never tries to dlopen one that is absent.
NSSWITCH_CONF = b"passwd: files\ngroup: files\nhosts: files dns\n"

# ld.so gives up after this many symlinks (ELOOP); so do we.
_MAX_SYMLINKS = 40


@dataclass(frozen=True)
class CollectedFile:
    path: str  # absolute path in the image == path on the host (inside root)
    kind: Kind
    link_target: str  # symlinks: the link text as on the host; "" for files
    host_path: Path  # where the bytes (or the link) are; for generated files, where they would be
    size: int  # bytes written to the layer; 0 for symlinks
    needed_by: tuple[str, ...]  # image paths of the objects (or the binary) that needed it
    reason: Reason
    data: bytes | None = None  # stripped library or generated file; None means read host_path
    # layer_files.file_mode of the host's bits (0o555 or 0o444), so umask and
    # odd host modes cannot change the layer; the kernel will not map a loader
    # without its execute bit. Symlinks are 0o777.
    mode: int = READ_ONLY

    def read(self) -> bytes:
        """The bytes to put in the layer for a file entry."""
        if self.kind != "file":
            raise ValueError(f"{self.path} is a symlink, not a file")
        return self.data if self.data is not None else read_regular_file(self.host_path, "cgo library closure")[0]


class LibraryNotFoundError(GosmallError):
    """ld.so would not find `name`, which `needed_by` (an image path) asks for as its loader or a library.

    `reason` says how it was asked for; audit holds an image to "interp" and "needed", not to what gosmall adds.
    """

    def __init__(self, message: str, *, name: str, needed_by: str, reason: Reason) -> None:
        super().__init__(message)
        self.name = name
        self.needed_by = needed_by
        self.reason = reason


@dataclass(frozen=True)
class LibraryClosure:
    files: tuple[CollectedFile, ...]  # sorted by path, each path once
    interpreter: str | None  # PT_INTERP as the binary names it
    links_glibc: bool


def default_library_dirs(ident: ElfIdent) -> tuple[str, ...]:
    """ld.so's built-in directories: multiarch first (Debian), lib64 (Fedora), then /lib, /usr/lib."""
    dirs: list[str] = []
    triplet = multiarch_triplet(ident)
    if triplet is not None:
        dirs += [f"/lib/{triplet}", f"/usr/lib/{triplet}"]
    if ident.elf_class == 64:
        dirs += ["/lib64", "/usr/lib64"]
    return (*dirs, "/lib", "/usr/lib")


@dataclass(frozen=True)
class _Link:
    path: str  # image path of the symlink itself
    target: str  # link text, as on the host
    host: Path


@dataclass(frozen=True)
class _Resolved:
    path: str  # image path with no symlink in it
    host: Path
    links: tuple[_Link, ...]  # symlinks followed on the way, in order


@dataclass(frozen=True)
class _Place:
    """A path as ld.so would open it, before the kernel resolves it.

    Most places are absolute image paths inside `root`. A place reached
    through the binary's own `$ORIGIN` is instead `rest` walked from `base`,
    the binary's image directory paired with its directory on the host: a
    library shipped next to the binary (`$ORIGIN/../lib`) is read from the
    build tree, not from root, and lands at the same relative spot in the
    image.
    """

    rest: str  # absolute image path when base is None, else relative to base
    base: tuple[str, Path] | None = None  # (image directory, host directory)

    def join(self, tail: str) -> _Place:
        return _Place(posixpath.join(self.rest, tail) if self.rest else tail, self.base)

    def display(self) -> str:
        """The image path, lexically normalised, for messages."""
        return _normalize(posixpath.join(self.base[0], self.rest) if self.base else self.rest)


@dataclass(frozen=True)
class _Namespace:
    """The file system as the image will see it: `root`, walked like the kernel does.

    Symlinks are followed one component at a time: an absolute link starts
    again at the image's "/" inside root, and ".." stops at "/", so nothing
    outside root (or the binary's own tree) is ever read.
    """

    root: Path

    def resolve(self, place: _Place) -> _Resolved | None:
        pending = [part for part in reversed(place.rest.split("/")) if part]
        current, host = place.base if place.base is not None else ("/", None)
        links: list[_Link] = []
        while pending:
            part = pending.pop()
            if part == ".":
                continue
            if part == "..":
                if current != "/":
                    current = posixpath.dirname(current)
                    host = host.parent if host is not None else None
                continue
            candidate = posixpath.join(current, part)
            candidate_host = host / part if host is not None else self.root / candidate.lstrip("/")
            if candidate_host.is_symlink():
                if len(links) >= _MAX_SYMLINKS:
                    return None
                target = os.readlink(candidate_host)
                links.append(_Link(candidate, target, candidate_host))
                if target.startswith("/"):
                    # An absolute link means the image's root, even when
                    # the walk started in the binary's own tree.
                    current, host = "/", None
                pending.extend(part for part in reversed(target.split("/")) if part)
                continue
            if not os.path.lexists(candidate_host) or (pending and not candidate_host.is_dir()):
                return None
            current, host = candidate, (candidate_host if host is not None else None)
        return _Resolved(current, host if host is not None else self.root / current.lstrip("/"), tuple(links))


def _normalize(path: str) -> str:
    # posixpath.normpath keeps a leading "//", which would be a distinct path.
    return "/" + posixpath.normpath(path).lstrip("/") if path.startswith("/") else posixpath.normpath(path)


def read_ld_so_conf(namespace_root: Path, conf: str = "/etc/ld.so.conf") -> tuple[str, ...]:
    """The directories /etc/ld.so.conf lists, following `include` globs, inside root.

    A relative include pattern is relative to the including file's directory,
    as ldconfig reads it. Missing files add nothing: a hand-made root or a
    minimal sysroot may have none.
    """
    namespace = _Namespace(namespace_root)
    dirs: list[str] = []
    _read_conf_file(namespace, conf, dirs, set())
    return tuple(dict.fromkeys(dirs))


def _read_conf_file(namespace: _Namespace, conf: str, dirs: list[str], seen: set[str]) -> None:
    resolved = namespace.resolve(_Place(conf))
    if resolved is None or not resolved.host.is_file() or resolved.path in seen:
        return
    seen.add(resolved.path)
    try:
        text = resolved.host.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        if words[0] == "include" and len(words) > 1:
            for pattern in words[1:]:
                if not pattern.startswith("/"):
                    pattern = posixpath.join(posixpath.dirname(conf), pattern)
                for match in _glob(namespace, pattern):
                    _read_conf_file(namespace, match, dirs, seen)
        elif words[0] == "hwcap":
            continue
        else:
            # ldconfig's old "dir=TYPE" form names the directory before "=".
            directory = line.split("=", 1)[0].strip().rstrip("/")
            if directory.startswith("/"):
                dirs.append(_normalize(directory))


def _glob(namespace: _Namespace, pattern: str) -> list[str]:
    """glob(3) inside the namespace, sorted like glibc's glob."""
    matches = ["/"]
    for part in (p for p in pattern.split("/") if p):
        following: list[str] = []
        for base in matches:
            if not any(c in part for c in "*?["):
                following.append(posixpath.join(base, part))
                continue
            resolved = namespace.resolve(_Place(base))
            if resolved is None or not resolved.host.is_dir():
                continue
            names = sorted(n for n in os.listdir(resolved.host) if not n.startswith(".") and fnmatch.fnmatchcase(n, part))
            following += [posixpath.join(base, n) for n in names]
        matches = following
    return matches


@dataclass(frozen=True)
class _ElfInfo:
    ident: ElfIdent
    interpreter: str | None
    needed: tuple[str, ...]
    rpath: str | None  # None when absent, or when DT_RUNPATH is present (ld.so then ignores it)
    runpath: str | None
    soname: str | None
    nodeflib: bool


def _read_elf(host: Path, label: str) -> _ElfInfo:
    try:
        facts = read_elf_file(host)
    except NotElfError:
        raise GosmallError(
            f"{label} ({host}) is not an ELF file, so its shared libraries cannot be read. "
            "Point gosmall at the binary produced by `go build` for a Linux platform."
        ) from None
    except ElfError as error:
        raise GosmallError(
            f"{label} ({host}) has an ELF header gosmall cannot read ({error}). "
            "The file may be truncated or corrupt; rebuild it or reinstall the package that ships it."
        ) from None
    return _ElfInfo(
        ident=facts.ident,
        interpreter=facts.interpreter,
        needed=facts.needed,
        # glibc drops DT_RPATH when DT_RUNPATH is present (get-dynamic-info.h).
        rpath=None if facts.runpath is not None else facts.rpath,
        runpath=facts.runpath,
        soname=facts.soname,
        nodeflib=facts.nodeflib,
    )


@dataclass(frozen=True)
class _Object:
    """One loaded ELF object: the binary, the loader or a library."""

    image_path: str  # real file in the image
    origin: _Place  # directory of the path ld.so opened it by: its $ORIGIN
    host: Path
    info: _ElfInfo
    loader: _Object | None  # whose DT_NEEDED (or dlopen) brought it in


@dataclass
class _Entry:
    """An entry while the closure grows; frozen into a CollectedFile at the end."""

    path: str
    kind: Kind
    link_target: str
    host: Path
    reason: Reason
    needed_by: list[str] = field(default_factory=list)
    data: bytes | None = None


_DST = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
_LEADING_ORIGIN = re.compile(r"\$(?:\{ORIGIN\}|ORIGIN(?![A-Za-z0-9_]))")


def _substitute_origin(text: str, origin: _Place) -> str:
    # ld.so leaves tokens it does not know as they are.
    return _DST.sub(lambda m: origin.display() if (m.group(1) or m.group(2)) == "ORIGIN" else m.group(0), text)


@dataclass
class _Collector:
    """The breadth-first walk ld.so does over DT_NEEDED, without loading anything."""

    namespace: _Namespace
    main: _Object
    binary_label: str
    search_paths: tuple[str, ...]
    conf_dirs: tuple[str, ...]
    default_dirs: tuple[str, ...]
    by_name: dict[str, _Object] = field(default_factory=dict)
    by_path: dict[str, _Object] = field(default_factory=dict)
    entries: dict[str, _Entry] = field(default_factory=dict)

    def load_interpreter(self, interpreter: str) -> _Object:
        resolved = self.namespace.resolve(_Place(_normalize(interpreter)))
        if resolved is None or not resolved.host.is_file():
            raise LibraryNotFoundError(
                f"{self.binary_label} names the loader {interpreter} (PT_INTERP), which does not exist under "
                f"{self.namespace.root}. Install the C library for the binary's platform there (for a cross "
                "build, set sysroot for that platform to a root that has it), or build with CGO_ENABLED=0 for a static binary.",
                name=interpreter,
                needed_by=self.main.image_path,
                reason="interp",
            )
        ident = read_elf_ident(resolved.host)
        if ident is None or not ident.matches(self.main.info.ident):
            found = ident.describe() if ident else "not ELF"
            raise LibraryNotFoundError(
                f"{self.binary_label} names the loader {interpreter} (PT_INTERP), but {resolved.host} is {found} "
                f"while the binary is {self.main.info.ident.describe()}. Set sysroot for the binary's "
                "platform to a root of that platform, or build the binary for the host's.",
                name=interpreter,
                needed_by=self.main.image_path,
                reason="interp",
            )
        info = _read_elf(resolved.host, interpreter)
        loader = _Object(resolved.path, _Place(posixpath.dirname(_normalize(interpreter))), resolved.host, info, None)
        self._record(resolved, self.main.image_path, "interp")
        self.by_path[resolved.path] = loader
        self.by_name[_normalize(interpreter)] = loader
        if info.soname:
            # libc names the loader by its soname in DT_NEEDED; ld.so matches
            # it to itself instead of searching.
            self.by_name[info.soname] = loader
        return loader

    def load_closure(self, names: Sequence[str], requester: _Object, reason: Reason, why: str = "") -> None:
        queue: deque[_Object] = deque()
        for name in names:
            loaded, new = self._load(name, requester, reason, why)
            if new:
                queue.append(loaded)
        while queue:
            current = queue.popleft()
            for name in current.info.needed:
                loaded, new = self._load(name, current, reason, "")
                if new:
                    queue.append(loaded)

    def find(self, name: str) -> _Object | None:
        return self.by_name.get(name)

    def _load(self, name: str, requester: _Object, reason: Reason, why: str) -> tuple[_Object, bool]:
        if name in self.by_name:
            known = self.by_name[name]
            self._add_needer(known, requester.image_path)
            return known, False
        found, origin = self._search(name, requester, why, reason)
        if found.path in self.by_path:
            # The same file under another name or path: ld.so compares
            # device and inode and reuses the loaded object.
            known = self.by_path[found.path]
            self.by_name[name] = known
            self._record(found, requester.image_path, reason)
            return known, False
        info = _read_elf(found.host, found.path)
        loaded = _Object(found.path, origin, found.host, info, requester)
        self.by_path[found.path] = loaded
        self.by_name[name] = loaded
        if info.soname:
            self.by_name.setdefault(info.soname, loaded)
        self._record(found, requester.image_path, reason)
        return loaded, True

    def _search(self, name: str, requester: _Object, why: str, reason: Reason) -> tuple[_Resolved, _Place]:
        wanted = self.main.info.ident
        skipped: list[str] = []
        if "/" in name:
            if not name.startswith("/"):
                raise GosmallError(
                    f"{requester.image_path} needs '{name}', a relative path, which ld.so opens relative to the "
                    "working directory at run time. Relink it with a bare soname (-l) or an absolute path."
                )
            resolved = self.namespace.resolve(_Place(_normalize(name)))
            if resolved is not None and resolved.host.is_file():
                ident = read_elf_ident(resolved.host)
                if ident is not None and ident.matches(wanted):
                    return resolved, _Place(posixpath.dirname(_normalize(name)))
                skipped.append(f"{resolved.host} ({ident.describe() if ident else 'not ELF'})")
            raise self._not_found(name, requester, why, [], skipped, reason)
        searched = self._search_dirs(requester)
        for directory, _ in searched:
            resolved = self.namespace.resolve(directory.join(name))
            if resolved is None or not resolved.host.is_file():
                continue
            ident = read_elf_ident(resolved.host)
            if ident is None or not ident.matches(wanted):
                skipped.append(f"{resolved.host} ({ident.describe() if ident else 'not ELF'})")
                continue
            return resolved, directory
        raise self._not_found(name, requester, why, searched, skipped, reason)

    def _search_dirs(self, requester: _Object) -> list[tuple[_Place, str]]:
        dirs: list[tuple[_Place, str]] = []
        if requester.info.runpath is None:
            chain: _Object | None = requester
            saw_main = False
            while chain is not None:
                dirs += [(d, f"DT_RPATH of {chain.image_path}") for d in self._expand(chain, chain.info.rpath, "DT_RPATH")]
                saw_main |= chain is self.main
                chain = chain.loader
            if not saw_main:
                dirs += [(d, f"DT_RPATH of {self.main.image_path}") for d in self._expand(self.main, self.main.info.rpath, "DT_RPATH")]
        dirs += [(_Place(d), "lib_search_paths") for d in self.search_paths]
        dirs += [(d, f"DT_RUNPATH of {requester.image_path}") for d in self._expand(requester, requester.info.runpath, "DT_RUNPATH")]
        if not requester.info.nodeflib:
            dirs += [(_Place(d), "/etc/ld.so.conf") for d in self.conf_dirs]
            dirs += [(_Place(d), "default") for d in self.default_dirs]
        first: dict[_Place, str] = {}
        for directory, source in dirs:
            first.setdefault(directory, source)
        return list(first.items())

    def _expand(self, owner: _Object, value: str | None, tag: str) -> list[_Place]:
        if not value:
            return []
        places: list[_Place] = []
        for entry in value.split(":"):
            tokens = [m.group(1) or m.group(2) for m in _DST.finditer(entry)]
            unsupported = next((t for t in tokens if t in ("LIB", "PLATFORM")), None)
            if unsupported is not None:
                raise GosmallError(
                    f"{owner.image_path} has the {tag} entry '{entry}', which uses ${unsupported}. Its value depends "
                    "on how the target's glibc was built, so gosmall does not guess it. Relink with "
                    "-Wl,-rpath using $ORIGIN or an absolute directory, or add the directory to lib_search_paths."
                )
            leading = _LEADING_ORIGIN.match(entry)
            if leading is not None:
                # Kept relative to the owner's own place, so a library next
                # to the binary is found in the build tree it sits in.
                places.append(owner.origin.join(_substitute_origin(entry[leading.end() :].lstrip("/"), owner.origin)))
                continue
            expanded = _substitute_origin(entry, owner.origin)
            # An empty or relative entry is relative to the working directory
            # at run time, which the build cannot know.
            if expanded.startswith("/"):
                places.append(_Place(expanded))
        return places

    def _not_found(
        self, name: str, requester: _Object, why: str, searched: list[tuple[_Place, str]], skipped: list[str], reason: Reason
    ) -> LibraryNotFoundError:
        needer = requester.image_path if requester is not self.main else f"{self.binary_label}"
        if "/" in name:
            where = "no directories, as a name with '/' is opened as it is"
        elif searched:
            where = ", ".join(f"{d.display()} ({source})" for d, source in searched)
        else:
            where = f"no directories, as {requester.image_path} is linked with -z nodefaultlib (DF_1_NODEFLIB)"
        rejected = (
            f" Skipped because the ELF class or machine differs from the binary's ({self.main.info.ident.describe()}): {', '.join(skipped)}."
            if skipped
            else ""
        )
        return LibraryNotFoundError(
            f"The shared library {name}, needed by {needer}{why}, was not found. Searched, in order, under "
            f"{self.namespace.root}: {where}.{rejected} Install the package that provides it (into the sysroot "
            "when root is set), add its directory to lib_search_paths, or link the binary with -Wl,-rpath naming it.",
            name=name,
            needed_by=requester.image_path,
            reason=reason,
        )

    def _record(self, found: _Resolved, needer: str, reason: Reason) -> None:
        for link in found.links:
            self._add(link.path, "symlink", link.target, link.host, reason, needer)
        self._add(found.path, "file", "", found.host, reason, needer)

    def _add_needer(self, loaded: _Object, needer: str) -> None:
        if loaded is self.main:
            return
        entry = self.entries.get(loaded.image_path)
        if entry is not None and needer not in entry.needed_by:
            entry.needed_by.append(needer)

    def _add(self, path: str, kind: Kind, target: str, host: Path, reason: Reason, needer: str) -> None:
        entry = self.entries.get(path)
        if entry is not None and (entry.kind, entry.link_target, entry.host) != (kind, target, host):
            raise _collision(path, f"a {kind} from {host}", entry)
        if entry is None:
            # The first reason wins; closures are walked interp, needed,
            # libs, nss, so a library the binary links is never "nss".
            entry = self.entries[path] = _Entry(path, kind, target, host, reason)
        if needer not in entry.needed_by:
            entry.needed_by.append(needer)


def collect_libraries(
    binary: Path,
    *,
    binary_image_path: str,
    extra_libs: Sequence[str] = (),
    search_paths: Sequence[Path] = (),
    root: Path = Path("/"),
    strip: bool = False,
) -> LibraryClosure:
    """Every file and symlink `binary` needs at run time, as the image must hold them.

    `binary` is read on the host and goes to `binary_image_path`; libraries
    are looked up inside `root`, except that the binary's `$ORIGIN` entries
    are walked from its directory on the host and land at the same relative
    place next to `binary_image_path`. `extra_libs` are dlopen'ed names,
    resolved like the binary's DT_NEEDED. A static binary yields nothing.
    """
    if not binary_image_path.startswith("/"):
        raise GosmallError(f"The binary's image path '{binary_image_path}' must be absolute, such as '/app'.")
    for directory in search_paths:
        if not str(directory).startswith("/"):
            raise GosmallError(f"lib_search_paths: '{directory}' is relative; give absolute directories, as the image will have them.")
    info = _read_elf(binary, str(binary))
    image_dir = posixpath.dirname(_normalize(binary_image_path))
    namespace = _Namespace(root)
    main = _Object(_normalize(binary_image_path), _Place("", (image_dir, binary.resolve().parent)), binary, info, None)
    collector = _Collector(
        namespace=namespace,
        main=main,
        binary_label=str(binary),
        search_paths=tuple(dict.fromkeys(_normalize(str(d)) for d in search_paths)),
        conf_dirs=read_ld_so_conf(root),
        default_dirs=default_library_dirs(info.ident),
    )
    if info.interpreter is not None:
        collector.load_interpreter(info.interpreter)
    collector.load_closure(info.needed, main, "needed")
    collector.load_closure(tuple(extra_libs), main, "libs", " (listed in libs)")

    libc = collector.find("libc.so.6")
    if libc is not None:
        collector.load_closure(NSS_LIBRARIES, libc, "nss", " (glibc loads it with dlopen for user and host lookups)")
        collector.entries[NSSWITCH_PATH] = _Entry(
            NSSWITCH_PATH, "file", "", root / NSSWITCH_PATH.lstrip("/"), "nss", [libc.image_path], NSSWITCH_CONF
        )

    _check_tree(collector.entries)
    files = tuple(_freeze(entry, info.ident, strip) for _, entry in sorted(collector.entries.items()))
    return LibraryClosure(files=files, interpreter=info.interpreter, links_glibc=libc is not None)


def _check_tree(entries: dict[str, _Entry]) -> None:
    """No entry may sit below another entry: a layer cannot hold a path as a directory and a symlink."""
    for path in sorted(entries):
        parent = posixpath.dirname(path)
        while parent != "/":
            if parent in entries:
                raise _collision(parent, f"a directory holding {path}", entries[parent])
            parent = posixpath.dirname(parent)


def _collision(path: str, wanted: str, existing: _Entry) -> GosmallError:
    what = f"a symlink to {existing.link_target}" if existing.kind == "symlink" else f"a file from {existing.host}"
    return GosmallError(
        f"The image would need {path} both as {what} (for {', '.join(existing.needed_by)}) and as {wanted}. "
        "This happens when a library found through the binary's $ORIGIN lands on a path the root has as a "
        "symlink, such as /lib on a merged-/usr system. Put the binary in a directory of its own in the image "
        "(for example /app/bin/app with its libraries under /app/lib), so its libraries and the system's do not collide."
    )


def _freeze(entry: _Entry, ident: ElfIdent, strip: bool) -> CollectedFile:
    data = entry.data
    if entry.kind == "file" and data is None and strip:
        stripped = strip_debug(entry.host, ident)
        data = stripped if stripped != entry.host.read_bytes() else None
    if entry.kind == "symlink":
        size, mode = 0, SYMLINK
    elif entry.data is not None:
        size, mode = len(entry.data), READ_ONLY
    else:
        stat = entry.host.stat()
        size = len(data) if data is not None else stat.st_size
        mode = file_mode(stat.st_mode)
    return CollectedFile(
        path=entry.path,
        kind=entry.kind,
        link_target=entry.link_target,
        host_path=entry.host,
        size=size,
        needed_by=tuple(entry.needed_by),
        reason=entry.reason,
        data=data,
        mode=mode,
    )


def strip_debug(library: Path, ident: ElfIdent) -> bytes:
    """The library's bytes without debug sections, made by binutils' strip.

    The target's own `<triplet>-strip` is preferred, then llvm-strip (which
    knows every machine), then plain strip for the host's.
    """
    triplet = multiarch_triplet(ident)
    candidates = ([f"{triplet}-strip"] if triplet else []) + ["llvm-strip", "strip"]
    program = next((found for found in map(shutil.which, candidates) if found), None)
    if program is None:
        raise GosmallError(
            f"strip_libs is true but no strip program was found (tried {', '.join(candidates)}). "
            "Install binutils (apt-get install binutils) or set strip_libs = false."
        )
    with owned_temporary_directory("gosmall-strip-") as scratch:
        output = scratch / library.name
        result = subprocess.run(
            [program, "--strip-debug", "-o", str(output), str(library)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise GosmallError(
                f"strip_libs: {program} could not strip {library}: {result.stderr.strip() or 'exit status ' + str(result.returncode)}. "
                "Install binutils for the binary's platform or set strip_libs = false."
            )
        return output.read_bytes()
