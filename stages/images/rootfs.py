"""An image's file system as a container sees it: its layers applied in order.

`flatten` applies each layer's tar over the ones below, the way an engine
unpacks them: a `.wh.NAME` entry removes NAME from the layers below, a
`.wh..wh..opq` entry empties its directory of them, a file or link where a
directory was replaces the whole directory, and an entry under a symlinked
directory lands where the link points (inside the image, never outside).
Nothing is written to disk and nothing in a layer is trusted: names are
normalised, `..` never climbs above `/`, and a hard link copies what it names.
A layer's tar is already capped (`images.source`), and a regular file's data
lies inside it, except a sparse file's: its holes are made of nothing, so a
few bytes of tar can stand for terabytes of zeros. `flatten` holds every file
to `max_file_size` before it reads one byte of it.

`RootFS.resolve` follows symlinks the way the kernel does, inside the image:
an absolute target starts again at the image's `/`, `..` stops at `/`, and
more than 40 links is a loop.
"""

from __future__ import annotations

import io
import os
import posixpath
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..errors import GosmallError
from ..redact import printable
from .source import size_text

Kind = Literal["file", "dir", "symlink", "device", "fifo"]

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
_MAX_SYMLINKS = 40  # the kernel's ELOOP limit
_IMPLIED_DIR = 0o755


@dataclass(frozen=True)
class ImageFile:
    """One path of the flattened file system, with its owner and mode as the layer gave them."""

    path: str  # absolute, normalised
    kind: Kind
    mode: int  # permission bits, setuid, setgid and sticky included (0o7777)
    uid: int = 0
    gid: int = 0
    data: bytes = b""  # regular files only
    link_target: str = ""  # symlinks only, as written
    implied: bool = False  # a parent directory no layer names: root's, 0o755

    @property
    def executable(self) -> bool:
        return self.kind == "file" and bool(self.mode & 0o111)


@dataclass
class RootFS:
    """Every path of the image once. Mutable only while `flatten` builds it."""

    files: dict[str, ImageFile] = field(default_factory=lambda: {"/": ImageFile("/", "dir", _IMPLIED_DIR, implied=True)})

    def __iter__(self) -> Iterator[ImageFile]:
        return (self.files[p] for p in sorted(self.files))

    def get(self, path: str) -> ImageFile | None:
        return self.files.get(path)

    def resolve(self, path: str, *, base: str = "/") -> ImageFile | None:
        """The entry `path` leads to after every symlink (relative paths start at `base`), or None."""
        real = self.real_path(path, base=base)
        return self.files.get(real) if real is not None else None

    def real_path(self, path: str, *, base: str = "/") -> str | None:
        """`path` with no symlink left in it, walked inside the image; None when a component is missing or it loops."""
        pending = [p for p in reversed(path.split("/")) if p]
        current = "/" if path.startswith("/") else base
        followed = 0
        while pending:
            part = pending.pop()
            if part == ".":
                continue
            if part == "..":
                current = posixpath.dirname(current)
                continue
            candidate = posixpath.join(current, part)
            entry = self.files.get(candidate)
            if entry is None:
                return None
            if entry.kind == "symlink":
                followed += 1
                if followed > _MAX_SYMLINKS:
                    return None
                target = entry.link_target
                current = "/" if target.startswith("/") else current
                pending.extend(p for p in reversed(target.split("/")) if p)
                continue
            if pending and entry.kind != "dir":
                return None
            current = candidate
        return current

    def remove(self, path: str) -> None:
        """`path` and everything below it."""
        removed = self.files.pop(path, None)
        if removed is not None and removed.kind == "dir":
            prefix = path + "/"
            for name in [p for p in self.files if p.startswith(prefix)]:
                del self.files[name]

    def add(self, entry: ImageFile) -> None:
        existing = self.files.get(entry.path)
        if existing is not None and not (existing.kind == "dir" and entry.kind == "dir"):
            self.remove(entry.path)
        self._make_parents(entry.path)
        self.files[entry.path] = entry

    def _make_parents(self, path: str) -> None:
        parent = posixpath.dirname(path)
        if parent == "/" or self.files.get(parent, None) is not None:
            return
        self._make_parents(parent)
        self.files[parent] = ImageFile(parent, "dir", _IMPLIED_DIR, implied=True)

    def write_tree(self, directory: Path, wanted: Callable[[ImageFile], bool], *, max_bytes: int | None = None, why: str = "") -> None:
        """The directories, symlinks and `wanted` regular files under `directory`, for tools that read a tree.

        Modes are ours (0o755, 0o644), so nothing written is setuid or writable
        by others; symlinks come last, so nothing is ever written through one.
        When the wanted files come to more than `max_bytes`, nothing is written.
        """
        entries = list(self)
        chosen = [e for e in entries if e.kind == "file" and wanted(e)]
        total = sum(len(e.data) for e in chosen)
        if max_bytes is not None and total > max_bytes:
            raise GosmallError(
                f"{why or 'the image'}: the {len(chosen)} files to write to disk come to {total} bytes, more than "
                f"{size_text(max_bytes)}, the most gosmall writes for an image it reads, so it wrote none. If you trust "
                "the image, raise the cap with --max-layer-size or GOSMALL_MAX_LAYER_SIZE."
            )
        for entry in entries:
            target = directory / entry.path.lstrip("/")
            try:
                if entry.kind == "dir":
                    target.mkdir(mode=0o755, parents=True, exist_ok=True)
                elif entry.kind == "file" and wanted(entry):
                    target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                    target.write_bytes(entry.data)
                    os.chmod(target, 0o755 if entry.mode & 0o111 else 0o644)
            except OSError:
                continue  # a name this file system cannot hold: the tool sees it missing
        for entry in entries:
            if entry.kind == "symlink":
                try:
                    (directory / entry.path.lstrip("/")).symlink_to(entry.link_target)
                except OSError:
                    continue


def normalize(name: str) -> str | None:
    """A layer member's name as an absolute image path, or None for the root itself."""
    # Names that are not UTF-8 stay distinct and printable: \\xNN instead of surrogates.
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    path = posixpath.normpath("/" + text.lstrip("/"))
    # normpath keeps "//" at the start and resolves ".." lexically; neither may climb above "/".
    path = "/" + "/".join(p for p in path.split("/") if p and p != "..")
    return None if path == "/" else path


def flatten(layers: Sequence[bytes], *, where: str = "image", max_file_size: int | None = None) -> RootFS:
    """The file system that `layers` (uncompressed tars, lowest first) make together; no file larger than `max_file_size`."""
    root = RootFS()
    for number, tar in enumerate(layers, start=1):
        try:
            _apply(root, tar, max_file_size, f"{where}: layer {number}")
        except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
            raise GosmallError(f"{where}: layer {number} is not a readable tar archive ({exc}); the image is damaged.") from None
    return root


def _apply(root: RootFS, tar: bytes, max_file_size: int | None, where: str) -> None:
    with tarfile.open(fileobj=io.BytesIO(tar), mode="r:") as archive:
        members = archive.getmembers()
        for member in members:
            if max_file_size is not None and member.isreg() and member.size > max_file_size:
                raise GosmallError(
                    f"{where}: {printable(member.name)} is a{' sparse' if member.issparse() else ''} file of {member.size} bytes, "
                    f"more than the {size_text(max_file_size)} gosmall lets one layer of an image decompress to, so it did not read it. "
                    "If you trust the image, raise the cap with --max-layer-size or GOSMALL_MAX_LAYER_SIZE."
                )
        # Whiteouts hide what the layers below have, whatever their order in this one.
        for member in members:
            path = normalize(member.name)
            if path is None:
                continue
            parent, name = posixpath.split(path)
            if name == OPAQUE:
                for child in [p for p in root.files if posixpath.dirname(p) == parent]:
                    root.remove(child)
            elif name.startswith(WHITEOUT):
                root.remove(posixpath.join(parent, name[len(WHITEOUT) :]))
        for member in members:
            path = normalize(member.name)
            if path is None or posixpath.basename(path).startswith(WHITEOUT):
                continue
            entry = _entry(root, archive, member, _landing(root, path))
            if entry is not None:
                root.add(entry)


def _landing(root: RootFS, path: str) -> str:
    """Where an engine writes `path`: its parent directory after symlinks, inside the image."""
    parent, name = posixpath.split(path)
    real = root.real_path(parent)
    return posixpath.join(real, name) if real is not None else path


def _entry(root: RootFS, archive: tarfile.TarFile, member: tarfile.TarInfo, path: str) -> ImageFile | None:
    mode = member.mode & 0o7777
    if member.islnk():
        target = normalize(member.linkname)
        linked = root.get(_landing(root, target)) if target else None
        if linked is None or linked.kind != "file":
            return None  # an engine refuses the layer; nothing to audit at that path
        return ImageFile(path, "file", linked.mode, linked.uid, linked.gid, linked.data)
    if member.isreg():
        stream = archive.extractfile(member)
        data = stream.read() if stream is not None else b""
        return ImageFile(path, "file", mode, member.uid, member.gid, data)
    if member.isdir():
        return ImageFile(path, "dir", mode, member.uid, member.gid)
    if member.issym():
        return ImageFile(path, "symlink", mode, member.uid, member.gid, link_target=member.linkname)
    if member.ischr() or member.isblk():
        return ImageFile(path, "device", mode, member.uid, member.gid)
    if member.isfifo():
        return ImageFile(path, "fifo", mode, member.uid, member.gid)
    return None
