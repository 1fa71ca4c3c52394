"""An image's layers flattened the way an engine unpacks them: whiteouts, opaque directories, links, hostile names."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Sequence

import pytest

from gosmall.errors import GosmallError
from gosmall.images.rootfs import flatten

Member = tuple[str, str, int, bytes, str]  # name, type ("file", "dir", "symlink", "hardlink"), mode, data, link target


def layer(*members: Member, uid: int = 0) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, mode, data, link in members:
            info = tarfile.TarInfo(name)
            info.mode, info.uid = mode, uid
            if kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, link
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, link
            info.size = len(data) if kind == "file" else 0
            tar.addfile(info, io.BytesIO(data) if kind == "file" else None)
    return out.getvalue()


def f(name: str, data: bytes = b"x", mode: int = 0o644) -> Member:
    return (name, "file", mode, data, "")


def d(name: str, mode: int = 0o755) -> Member:
    return (name, "dir", mode, b"", "")


def paths(layers: Sequence[bytes]) -> list[str]:
    return [entry.path for entry in flatten(layers) if not entry.implied]


def test_a_whiteout_removes_a_lower_file_and_a_lower_directory_with_everything_in_it() -> None:
    lower = layer(d("etc"), f("etc/shadow"), d("opt"), d("opt/tool"), f("opt/tool/bin"), f("keep"))
    upper = layer(f("etc/.wh.shadow", b""), f("opt/.wh.tool", b""))
    assert paths([lower, upper]) == ["/etc", "/keep", "/opt"]


def test_an_opaque_directory_hides_the_lower_layers_children_but_keeps_its_own() -> None:
    lower = layer(d("data"), f("data/old"), d("data/sub"), f("data/sub/deep"))
    upper = layer(d("data"), f("data/new"), f("data/.wh..wh..opq", b""))
    assert paths([lower, upper]) == ["/data", "/data/new"]


def test_a_file_over_a_directory_replaces_it_and_a_directory_keeps_its_children() -> None:
    lower = layer(d("a"), f("a/child"), d("b", 0o700), f("b/child"))
    upper = layer(f("a", b"now a file"), d("b", 0o755))
    root = flatten([lower, upper])
    assert paths([lower, upper]) == ["/a", "/b", "/b/child"]
    assert root.files["/a"].kind == "file" and root.files["/b"].mode == 0o755


def test_an_entry_under_a_symlinked_directory_lands_where_the_link_points() -> None:
    lower = layer(d("usr"), d("usr/lib"), ("lib", "symlink", 0o777, b"", "usr/lib"))
    upper = layer(f("lib/libx.so.1", b"ELF"))
    root = flatten([lower, upper])
    assert root.files["/usr/lib/libx.so.1"].data == b"ELF"
    assert root.resolve("/lib/libx.so.1") == root.files["/usr/lib/libx.so.1"]


def test_a_hard_link_is_a_file_with_its_targets_bytes_and_mode() -> None:
    root = flatten([layer(f("bin/real", b"program", 0o4755), ("bin/alias", "hardlink", 0o644, b"", "bin/real"))])
    assert root.files["/bin/alias"].data == b"program" and root.files["/bin/alias"].mode == 0o4755


def test_names_never_climb_above_the_root() -> None:
    root = flatten([layer(f("../../etc/evil"), f("./a/../../b"), f("/abs"))])
    assert sorted(p for p in root.files if p != "/" and not root.files[p].implied) == ["/abs", "/b", "/etc/evil"]


def test_symlinks_resolve_inside_the_image_and_loops_end() -> None:
    root = flatten(
        [
            layer(
                d("bin"),
                f("bin/busybox", b"bb", 0o755),
                ("bin/sh", "symlink", 0o777, b"", "busybox"),
                ("escape", "symlink", 0o777, b"", "../../../../bin/sh"),
                ("loop1", "symlink", 0o777, b"", "loop2"),
                ("loop2", "symlink", 0o777, b"", "/loop1"),
            )
        ]
    )
    assert root.resolve("/bin/sh") == root.files["/bin/busybox"]
    assert root.resolve("/escape") == root.files["/bin/busybox"]
    assert root.resolve("/loop1") is None and root.resolve("/bin/sh/x") is None


def test_owner_and_special_bits_are_kept() -> None:
    root = flatten([layer(d("tmp", 0o1777), uid=0), layer(f("home/u/file", mode=0o2640), uid=1000)])
    assert root.files["/tmp"].mode == 0o1777
    assert (root.files["/home/u/file"].mode, root.files["/home/u/file"].uid) == (0o2640, 1000)
    assert root.files["/home/u"].implied and root.files["/home/u"].uid == 0


def test_a_layer_that_is_not_a_tar_is_a_clear_error() -> None:
    with pytest.raises(GosmallError, match=r"linux/amd64: layer 2 is not a readable tar archive"):
        flatten([layer(f("a")), b"\x00not a tar" * 100], where="linux/amd64")
