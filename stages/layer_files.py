"""What may enter a layer: one entry type, one way to read a host file, one merge.

Every path in an image's layer is a `FileEntry`, whoever made it: the binary,
the runtime files, the project's `files`, a cgo binary's libraries. Modes are
decided here (0o555 for anything executable on the host, else 0o444; 0o755
for directories gosmall adds as parents), so the build machine's umask and
owners never reach the digest. Host files are opened only when they are
regular files, without following a link, so a FIFO cannot hang a build and a
device cannot fill memory. `merge_entries` refuses two sources for one path
instead of letting one silently win.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from .errors import GosmallError

Kind = Literal["file", "dir", "symlink"]
Role = Literal["binary", "tzdata", "users", "ca_certs", "files", "dirs", "libraries"]

READ_ONLY = 0o444
EXECUTABLE = 0o555
PARENT_DIR = 0o755
SYMLINK = 0o777


@dataclass(frozen=True)
class FileEntry:
    path: str  # absolute path in the image
    kind: Kind
    mode: int
    role: Role
    uid: int = 0
    gid: int = 0
    data: bytes = b""
    link_target: str = ""
    origin: str = ""  # where it came from, for messages: a host path, a config key

    @property
    def size(self) -> int:
        return len(self.data)


def file_mode(host_mode: int) -> int:
    """Only the executable bit survives from the host."""
    return EXECUTABLE if host_mode & 0o111 else READ_ONLY


def _kind_of(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISLNK, "a symbolic link"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def read_regular_file(path: Path, what: str) -> tuple[bytes, int]:
    """The bytes and st_mode of `path`, which must be a regular file and not a link.

    O_NONBLOCK so that opening a FIFO swapped in after the check cannot block;
    fstat on the open descriptor so that what is read is what was checked.
    """
    try:
        before = os.lstat(path)
    except OSError as exc:
        raise GosmallError(f"{what}: {path} cannot be read: {exc.strerror}.") from None
    if not stat.S_ISREG(before.st_mode):
        raise GosmallError(
            f"{what}: {path} is {_kind_of(before.st_mode)}; only regular files can go into an image. Remove it or map another path."
        )
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise GosmallError(f"{what}: {path} cannot be read: {exc.strerror}.") from None
    with os.fdopen(fd, "rb") as stream:
        opened = os.fstat(stream.fileno())
        if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (before.st_dev, before.st_ino):
            raise GosmallError(f"{what}: {path} changed while gosmall read it; run the build again.")
        return stream.read(), opened.st_mode


def host_file(path: Path, image_path: str, role: Role, what: str) -> FileEntry:
    """A regular host file as a layer entry: its bytes, its executable bit, root's ownership."""
    data, mode = read_regular_file(path, what)
    return FileEntry(image_path, "file", file_mode(mode), role, data=data, origin=str(path))


def _describe(entry: FileEntry) -> str:
    return f"{entry.role} ({entry.origin})" if entry.origin else f"gosmall's {entry.role}"


def merge_entries(entries: Iterable[FileEntry]) -> tuple[FileEntry, ...]:
    """Every path in the layer, parents included, sorted, each once; two sources for one path are an error."""
    merged: dict[str, FileEntry] = {}
    for entry in entries:
        existing = merged.get(entry.path)
        if existing is not None and existing != entry:
            raise GosmallError(
                f"{entry.path} would be written twice in the image: by {_describe(existing)} and by {_describe(entry)}. "
                "gosmall lets neither win silently; give the `files` entry another dst, or drop the setting that generates it "
                "(tzdata, ca_certs, user)."
            )
        merged[entry.path] = entry
    for path in list(merged):
        for parent in PurePosixPath(path).parents:
            name = str(parent)
            if name == "/":
                continue
            holder = merged.get(name)
            if holder is None:
                merged[name] = FileEntry(name, "dir", PARENT_DIR, "dirs")
            elif holder.kind != "dir":
                raise GosmallError(
                    f"{path} from {_describe(merged[path])} needs {name} to be a directory, but {_describe(holder)} "
                    f"puts a {holder.kind} there. Give one of them another path in the image."
                )
    return tuple(merged[p] for p in sorted(merged, key=lambda p: PurePosixPath(p).parts))
