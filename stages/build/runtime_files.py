"""Stage 4: what the binary needs at run time, and nothing else.

Time-zone data (as the image's `tzdata` says), a user database with root
and nonroot only, /tmp, a home for nonroot, CA certificates when asked, and
the project's extra files. Each becomes a `FileEntry` with its mode and
owner fixed here, so nothing about the build machine leaks into the layer.
"""

from __future__ import annotations

import io
import os
import posixpath
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import NONROOT_ID, ImageConfig
from ..errors import GosmallError, did_you_mean
from ..layer_files import EXECUTABLE, READ_ONLY, SYMLINK, FileEntry, Role, host_file, read_regular_file
from .toolchain import Toolchain

if TYPE_CHECKING:
    from .libraries import LibraryClosure  # only cgo builds have one; its module is not small

ZONEINFO_ZIP = "/usr/share/zoneinfo.zip"
ZONEINFO_DIR = "/usr/share/zoneinfo"
HOST_ZONEINFO = Path("/usr/share/zoneinfo")
HOST_LOCAL_ZONE = "localtime"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# A fixed zip timestamp: zip cannot store 1970, and the bytes must not depend on the day.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class RuntimeFiles:
    entries: tuple[FileEntry, ...]
    env: tuple[tuple[str, str], ...]  # added to the image config's Env
    skipped: tuple[str, ...] = ()  # project paths under a `files` src that were deliberately left out, and why

    def size(self, role: Role | None = None) -> int:
        return sum(e.size for e in self.entries if role is None or e.role == role)


def with_libraries(runtime: RuntimeFiles, closure: LibraryClosure, search_paths: tuple[Path, ...] = ()) -> RuntimeFiles:
    """Add a cgo binary's library closure; files keep only their executable bit from the host."""
    entries = list(runtime.entries)
    for library in closure.files:
        origin = str(library.host_path)
        if library.kind == "symlink":
            entries.append(FileEntry(library.path, "symlink", SYMLINK, "libraries", link_target=library.link_target, origin=origin))
        else:
            entries.append(FileEntry(library.path, "file", library.mode, "libraries", data=library.read(), origin=origin))
    env = runtime.env
    if search_paths:
        # ld.so only looks in lib_search_paths at run time when told to, as the resolver assumed.
        env = (*env, ("LD_LIBRARY_PATH", ":".join(str(p) for p in search_paths)))
    return RuntimeFiles(tuple(entries), env, runtime.skipped)


def collect_runtime_files(
    image: ImageConfig, toolchain: Toolchain, *, host_zoneinfo: Path = HOST_ZONEINFO, never_ship: tuple[Path, ...] = ()
) -> RuntimeFiles:
    """`never_ship`: project paths no `files` mapping may carry into the image (the output directory)."""
    entries: list[FileEntry] = []
    env: list[tuple[str, str]] = []
    if image.tzdata == "zip":
        entries.append(_zoneinfo_zip(image, toolchain.goroot / "lib" / "time" / "zoneinfo.zip"))
        # Go reads ZONEINFO before the system directories; scratch has none of those.
        env.append(("ZONEINFO", ZONEINFO_ZIP))
    elif image.tzdata == "system":
        entries.extend(_system_zoneinfo(image, host_zoneinfo))
    entries.extend(_users(image))
    if image.ca_certs:
        entries.append(_ca_bundle(image))
    files, skipped = _project_files(image, never_ship)
    entries.extend(files)
    return RuntimeFiles(tuple(entries), tuple(env), skipped)


def _zoneinfo_zip(image: ImageConfig, source: Path) -> FileEntry:
    if not source.is_file():
        raise GosmallError(f'The Go toolchain has no {source}; use tzdata = "embed" or "system" for image \'{image.name}\'.')
    data, _ = read_regular_file(source, "Go's time zone database")
    if image.zones:
        data = _reduced_zip(image, data, source)
    return FileEntry(ZONEINFO_ZIP, "file", READ_ONLY, "tzdata", data=data, origin=str(source))


def _reduced_zip(image: ImageConfig, data: bytes, source: Path) -> bytes:
    """Only the named zones; Go's zip stores links as copies, so no link chasing."""
    with zipfile.ZipFile(io.BytesIO(data)) as full:
        names = set(full.namelist())
        _check_zones(image, names, f"Go's {source}")
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as reduced:
            for zone in sorted(set(image.zones)):
                info = zipfile.ZipInfo(zone, date_time=_ZIP_DATE)
                info.external_attr = 0o444 << 16
                info.create_system = 3
                # Go's reader accepts only stored (uncompressed) entries.
                reduced.writestr(info, full.read(zone), compress_type=zipfile.ZIP_STORED)
    return out.getvalue()


def _check_zones(image: ImageConfig, available: set[str], where: str) -> None:
    for i, zone in enumerate(image.zones):
        if zone not in available:
            raise GosmallError(
                f"[tool.gosmall.images.{image.name}] zones[{i}]: {zone!r} is not a time zone in {where}.{did_you_mean(zone, available)}"
            )


def _system_zoneinfo(image: ImageConfig, host: Path) -> list[FileEntry]:
    if not host.is_dir():
        raise GosmallError(
            f"Image '{image.name}' has tzdata = \"system\" but this machine has no {host}; "
            'install its tzdata package, or use tzdata = "zip" (Go\'s own copy).'
        )
    entries: dict[str, FileEntry] = {}
    if image.zones:
        available = {p.relative_to(host).as_posix() for p in host.rglob("*") if p.is_file()}
        _check_zones(image, available, str(host))
        for zone in image.zones:
            _add_zone_path(host / zone, host, entries)
    else:
        for path in sorted(p for p in host.rglob("*") if not p.is_dir() or p.is_symlink()):
            # `localtime` is the build machine's own zone (Debian links it to /etc/localtime):
            # never the image's. A whole-tree copy also skips links that lead nowhere on this
            # machine; they would dangle in the image too.
            if path.name != HOST_LOCAL_ZONE and path.exists():
                _add_zone_path(path, host, entries)
    return [entries[k] for k in sorted(entries)]


def _add_zone_path(path: Path, host: Path, entries: dict[str, FileEntry]) -> None:
    """The zone file, and when it is a link, the link and whatever it names."""
    relative = path.relative_to(host).as_posix()
    image_path = f"{ZONEINFO_DIR}/{relative}"
    if image_path in entries:
        return
    if path.is_symlink():
        target = os.readlink(path)
        resolved = path.resolve()
        # Where the link text leads inside the image; kept as a link only when that
        # is the same place inside the tree as on this machine.
        in_image = posixpath.normpath(posixpath.join(posixpath.dirname(image_path), target))
        host_root = host.resolve()
        same_place = (
            not posixpath.isabs(target)
            and in_image.startswith(ZONEINFO_DIR + "/")
            and resolved == (host_root / in_image[len(ZONEINFO_DIR) + 1 :]).resolve()
        )
        if same_place and resolved.exists():
            entries[image_path] = FileEntry(image_path, "symlink", SYMLINK, "tzdata", link_target=target, origin=str(path))
            inner = host / in_image[len(ZONEINFO_DIR) + 1 :]
            if resolved.is_dir():
                for child in sorted(inner.rglob("*")):
                    if not child.is_dir() or child.is_symlink():
                        _add_zone_path(child, host, entries)
            else:
                _add_zone_path(inner, host, entries)
            return
        if resolved.is_file():
            # A link out of the tree (or out and back) would dangle in the image: ship the bytes.
            entries[image_path] = _zone_file(resolved, image_path)
            return
        raise GosmallError(
            f"{path} is a link to {target}, which does not exist on this machine, so time zone {relative!r} "
            "cannot be shipped; reinstall the tzdata package or choose other zones."
        )
    if path.is_file():
        entries[image_path] = _zone_file(path, image_path)


def _zone_file(path: Path, image_path: str) -> FileEntry:
    data, _ = read_regular_file(path, 'tzdata = "system"')
    return FileEntry(image_path, "file", READ_ONLY, "tzdata", data=data, origin=str(path))


def _users(image: ImageConfig) -> list[FileEntry]:
    # root's home is / (which exists), as distroless does it without shipping an empty /root.
    passwd = f"root:x:0:0:root:/:/sbin/nologin\nnonroot:x:{NONROOT_ID}:{NONROOT_ID}:nonroot:/home/nonroot:/sbin/nologin\n"
    group = f"root:x:0:\nnonroot:x:{NONROOT_ID}:\n"
    entries = [
        FileEntry("/etc/passwd", "file", READ_ONLY, "users", data=passwd.encode()),
        FileEntry("/etc/group", "file", READ_ONLY, "users", data=group.encode()),
        # Sticky and world-writable, like every /tmp; the one writable place a
        # program on a read-only root can still be pointed at with a tmpfs.
        FileEntry("/tmp", "dir", 0o1777, "dirs"),
    ]
    if image.uid == NONROOT_ID:  # "nonroot" or "65532:65532" alike: the passwd entry names this home
        entries.append(FileEntry("/home/nonroot", "dir", 0o700, "dirs", uid=NONROOT_ID, gid=NONROOT_ID))
    return entries


def _ca_bundle(image: ImageConfig) -> FileEntry:
    import certifi

    bundle = Path(certifi.where()).read_bytes()
    for extra in image.extra_ca_certs:
        pem, _ = read_regular_file(extra, f"[tool.gosmall.images.{image.name}] extra_ca_certs")
        if b"-----BEGIN CERTIFICATE-----" not in pem:
            raise GosmallError(
                f"[tool.gosmall.images.{image.name}] extra_ca_certs: {extra} holds no PEM certificate "
                "(no '-----BEGIN CERTIFICATE-----' line); give PEM-encoded CA certificates."
            )
        bundle = bundle.rstrip(b"\n") + b"\n" + pem.strip(b"\n") + b"\n"
    return FileEntry(CA_BUNDLE, "file", READ_ONLY, "ca_certs", data=bundle, origin="certifi")


def _project_files(image: ImageConfig, never_ship: tuple[Path, ...]) -> tuple[list[FileEntry], tuple[str, ...]]:
    entries: list[FileEntry] = []
    skipped: list[str] = []
    for i, mapping in enumerate(image.files):
        what = f"[tool.gosmall.images.{image.name}] files[{i}]"
        if not mapping.src.is_dir():
            entries.append(replace(host_file(mapping.src, mapping.dst, "files", what), origin=f"files[{i}] {mapping.src}"))
            continue
        walker = _MappedTree(mapping.src, mapping.dst, image.project_root or mapping.src, never_ship, what, i)
        entries.extend(walker.walk())
        skipped.extend(walker.skipped)
    return entries, tuple(skipped)


@dataclass
class _MappedTree:
    """One `files` directory: its regular files and directories, and the links that stay inside the project."""

    src: Path
    dst: str
    project_root: Path
    never_ship: tuple[Path, ...]
    what: str
    index: int
    skipped: list[str] = field(default_factory=list)

    def walk(self) -> list[FileEntry]:
        origin = f"files[{self.index}] {self.src}"
        entries = [FileEntry(self.dst, "dir", EXECUTABLE, "files", origin=origin)]
        for directory, dirnames, filenames in os.walk(self.src, followlinks=False):
            here = Path(directory)
            kept: list[str] = []
            for name in sorted(dirnames):
                path = here / name
                if path.is_symlink():
                    entries.append(self._link(path))
                elif self._leave_out(path):
                    continue
                else:
                    entries.append(FileEntry(self._image_path(path), "dir", EXECUTABLE, "files", origin=str(path)))
                    kept.append(name)
            dirnames[:] = kept  # os.walk descends only into these
            for name in sorted(filenames):
                path = here / name
                if self._leave_out(path):
                    continue
                if path.is_symlink():
                    entries.append(self._link(path))
                else:
                    entries.append(host_file(path, self._image_path(path), "files", self.what))
        return entries

    def _leave_out(self, path: Path) -> bool:
        # .git holds the origin URL and every object; outputs would grow the image on each build.
        if path.name == ".git":
            self.skipped.append(f"{path} (a git repository's metadata)")
            return True
        if any(path == out or out in path.parents for out in self.never_ship):
            self.skipped.append(f"{path} (gosmall's output directory)")
            return True
        return False

    def _image_path(self, path: Path) -> str:
        return f"{self.dst}/{path.relative_to(self.src).as_posix()}"

    def _link(self, link: Path) -> FileEntry:
        text = os.readlink(link)
        target = Path(os.path.realpath(link))
        root, src = self.project_root.resolve(), self.src.resolve()
        if not target.exists():
            raise GosmallError(f"{self.what}: {link} is a link to {text!r}, which does not exist; remove the link or restore its target.")
        if target != root and root not in target.parents:
            raise GosmallError(
                f"{self.what}: {link} is a link to {text!r}, which resolves to {target}, outside the project {root}. "
                "gosmall never ships a host file through a link; copy the file into the project if the image needs it."
            )
        image_path = self._image_path(link)
        if target == src or src in target.parents:
            # Inside the mapped tree: the same link, relative, so it resolves in the image as it does here.
            in_image = self.dst if target == src else f"{self.dst}/{target.relative_to(src).as_posix()}"
            relative = posixpath.relpath(in_image, posixpath.dirname(image_path))
            return FileEntry(image_path, "symlink", SYMLINK, "files", link_target=relative, origin=str(link))
        if target.is_dir():
            raise GosmallError(
                f"{self.what}: {link} is a link to the directory {target}, outside the mapped directory {self.src}; "
                "map that directory with a `files` entry of its own instead."
            )
        # Elsewhere in the project: the file's bytes, as if it were here.
        return replace(host_file(target, image_path, "files", self.what), origin=f"{link} -> {target}")
