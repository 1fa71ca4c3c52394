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
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .config import NONROOT_ID, ImageConfig
from .errors import GosmallError, did_you_mean
from .libraries import LibraryClosure
from .toolchain import Toolchain

Kind = Literal["file", "dir", "symlink"]
Role = Literal["binary", "tzdata", "users", "ca_certs", "files", "dirs", "libraries"]

ZONEINFO_ZIP = "/usr/share/zoneinfo.zip"
ZONEINFO_DIR = "/usr/share/zoneinfo"
HOST_ZONEINFO = Path("/usr/share/zoneinfo")
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# A fixed zip timestamp: zip cannot store 1970, and the bytes must not depend on the day.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


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

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class RuntimeFiles:
    entries: tuple[FileEntry, ...]
    env: tuple[tuple[str, str], ...]  # added to the image config's Env

    def size(self, role: Role | None = None) -> int:
        return sum(e.size for e in self.entries if role is None or e.role == role)


def with_libraries(runtime: RuntimeFiles, closure: LibraryClosure, search_paths: tuple[Path, ...] = ()) -> RuntimeFiles:
    """Add a cgo binary's library closure; files keep only their executable bit from the host."""
    entries = list(runtime.entries)
    for library in closure.files:
        if library.kind == "symlink":
            entries.append(FileEntry(library.path, "symlink", 0o777, "libraries", link_target=library.link_target))
        else:
            mode = 0o555 if library.mode & 0o111 else 0o444
            entries.append(FileEntry(library.path, "file", mode, "libraries", data=library.read()))
    env = runtime.env
    if search_paths:
        # ld.so only looks in lib_search_paths at run time when told to, as the resolver assumed.
        env = (*env, ("LD_LIBRARY_PATH", ":".join(str(p) for p in search_paths)))
    return RuntimeFiles(tuple(entries), env)


def collect_runtime_files(image: ImageConfig, toolchain: Toolchain, *, host_zoneinfo: Path = HOST_ZONEINFO) -> RuntimeFiles:
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
    entries.extend(_project_files(image))
    return RuntimeFiles(tuple(entries), tuple(env))


def _zoneinfo_zip(image: ImageConfig, source: Path) -> FileEntry:
    if not source.is_file():
        raise GosmallError(f'The Go toolchain has no {source}; use tzdata = "embed" or "system" for image \'{image.name}\'.')
    data = source.read_bytes()
    if image.zones:
        data = _reduced_zip(image, data, source)
    return FileEntry(ZONEINFO_ZIP, "file", 0o444, "tzdata", data=data)


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
            # A whole-tree copy skips links that lead nowhere on this machine (Debian's
            # localtime -> /etc/localtime in a container); they would dangle in the image too.
            if path.exists():
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
            entries[image_path] = FileEntry(image_path, "symlink", 0o777, "tzdata", link_target=target)
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
            entries[image_path] = FileEntry(image_path, "file", 0o444, "tzdata", data=resolved.read_bytes())
            return
        raise GosmallError(
            f"{path} is a link to {target}, which does not exist on this machine, so time zone {relative!r} "
            "cannot be shipped; reinstall the tzdata package or choose other zones."
        )
    if path.is_file():
        entries[image_path] = FileEntry(image_path, "file", 0o444, "tzdata", data=path.read_bytes())


def _users(image: ImageConfig) -> list[FileEntry]:
    passwd = f"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{NONROOT_ID}:{NONROOT_ID}:nonroot:/home/nonroot:/sbin/nologin\n"
    group = f"root:x:0:\nnonroot:x:{NONROOT_ID}:\n"
    entries = [
        FileEntry("/etc/passwd", "file", 0o444, "users", data=passwd.encode()),
        FileEntry("/etc/group", "file", 0o444, "users", data=group.encode()),
        # Sticky and world-writable, like every /tmp; the one writable place a
        # program on a read-only root can still be pointed at with a tmpfs.
        FileEntry("/tmp", "dir", 0o1777, "dirs"),
    ]
    if image.user == "nonroot":
        entries.append(FileEntry("/home/nonroot", "dir", 0o700, "dirs", uid=NONROOT_ID, gid=NONROOT_ID))
    return entries


def _ca_bundle(image: ImageConfig) -> FileEntry:
    import certifi

    bundle = Path(certifi.where()).read_bytes()
    for extra in image.extra_ca_certs:
        pem = extra.read_bytes()
        if b"-----BEGIN CERTIFICATE-----" not in pem:
            raise GosmallError(
                f"[tool.gosmall.images.{image.name}] extra_ca_certs: {extra} holds no PEM certificate "
                "(no '-----BEGIN CERTIFICATE-----' line); give PEM-encoded CA certificates."
            )
        bundle = bundle.rstrip(b"\n") + b"\n" + pem.strip(b"\n") + b"\n"
    return FileEntry(CA_BUNDLE, "file", 0o444, "ca_certs", data=bundle)


def _project_files(image: ImageConfig) -> list[FileEntry]:
    entries: list[FileEntry] = []
    for mapping in image.files:
        sources = [mapping.src] if not mapping.src.is_dir() else [mapping.src, *sorted(mapping.src.rglob("*"))]
        for source in sources:
            relative = source.relative_to(mapping.src).as_posix()
            dst = mapping.dst if relative == "." else f"{mapping.dst}/{relative}"
            info = source.stat()
            if stat.S_ISDIR(info.st_mode):
                entries.append(FileEntry(dst, "dir", 0o555, "files"))
            else:
                # Only the executable bit survives from the host: umask and owner must not reach the digest.
                mode = 0o555 if info.st_mode & 0o111 else 0o444
                entries.append(FileEntry(dst, "file", mode, "files", data=source.read_bytes()))
    return entries
