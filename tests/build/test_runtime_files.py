"""Stage 4: the files a binary needs at run time, with modes and owners fixed here."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import certifi
import pytest

from gosmall.build.compile import compile_binary, host_platform, plan_compile
from gosmall.build.runtime_files import RuntimeFiles, collect_runtime_files
from gosmall.build.toolchain import Toolchain, find_module, find_toolchain
from gosmall.config import ImageConfig, parse_project
from gosmall.errors import GosmallError
from gosmall.layer_files import FileEntry

ZIP = "/usr/share/zoneinfo.zip"


@pytest.fixture(scope="module")
def toolchain(tmp_path_factory: pytest.TempPathFactory) -> Toolchain:
    root = tmp_path_factory.mktemp("rt-src")
    (root / "go.mod").write_text("module example.com/hello\n\ngo 1.22\n")
    return find_toolchain(find_module(root))


def image_config(root: Path, **keys: Any) -> ImageConfig:
    (root / "app").mkdir(parents=True, exist_ok=True)
    return parse_project({"images": {"app": {"package": "app", **keys}}}, root / "pyproject.toml").images[0]


def by_path(files: RuntimeFiles) -> dict[str, FileEntry]:
    return {e.path: e for e in files.entries}


def zone_bytes(toolchain: Toolchain, zone: str) -> bytes:
    with zipfile.ZipFile(toolchain.goroot / "lib" / "time" / "zoneinfo.zip") as full:
        return full.read(zone)


# -- time zones ---------------------------------------------------------------


def test_tzdata_zip_ships_the_toolchains_zoneinfo_zip(tmp_path: Path, toolchain: Toolchain) -> None:
    files = collect_runtime_files(image_config(tmp_path), toolchain)
    entry = by_path(files)[ZIP]
    assert entry.data == (toolchain.goroot / "lib" / "time" / "zoneinfo.zip").read_bytes()
    assert (entry.kind, entry.mode, entry.uid, entry.gid, entry.role) == ("file", 0o444, 0, 0, "tzdata")
    assert files.env == (("ZONEINFO", ZIP),)


def test_zones_reduce_the_zip_to_exactly_those_stored_zones(tmp_path: Path, toolchain: Toolchain) -> None:
    image = image_config(tmp_path, zones=["Europe/Berlin", "America/New_York", "UTC"])
    data = by_path(collect_runtime_files(image, toolchain))[ZIP].data
    with zipfile.ZipFile(io.BytesIO(data)) as reduced:
        assert reduced.namelist() == ["America/New_York", "Europe/Berlin", "UTC"]
        for info in reduced.infolist():
            assert info.compress_type == zipfile.ZIP_STORED  # Go's reader refuses anything else
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
            assert reduced.read(info) == zone_bytes(toolchain, info.filename)
    assert len(data) < 10_000
    again = by_path(collect_runtime_files(image, toolchain))[ZIP].data
    assert again == data


LOAD_ZONE_GO = """package main

import (
	"fmt"
	"os"
	"time"
)

func main() {
	loc, err := time.LoadLocation(os.Args[1])
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	fmt.Println(time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC).In(loc).Format("MST -0700"))
}
"""


def can_hide_host_zoneinfo() -> bool:
    if shutil.which("unshare") is None or not Path("/usr/share/zoneinfo").is_dir():
        return False
    probe = ["unshare", "-m", "--propagation", "private", "sh", "-c", "mount -t tmpfs none /usr/share/zoneinfo"]
    return subprocess.run(probe, capture_output=True).returncode == 0


@pytest.mark.skipif(not can_hide_host_zoneinfo(), reason="needs unshare -m to hide the host's /usr/share/zoneinfo")
def test_go_loads_zones_from_the_reduced_zip_alone(tmp_path: Path, toolchain: Toolchain) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "go.mod").write_text("module example.com/zone\n\ngo 1.22\n")
    (tmp_path / "app" / "main.go").write_text(LOAD_ZONE_GO)
    image = image_config(tmp_path, zones=["Europe/Berlin"])
    zone_zip = tmp_path / "zoneinfo.zip"
    zone_zip.write_bytes(by_path(collect_runtime_files(image, toolchain))[ZIP].data)
    plan = plan_compile(image, find_module(image.package), host_platform(), "dev")
    program = compile_binary(plan, toolchain, tmp_path / "work").path
    env = {"PATH": os.environ["PATH"], "ZONEINFO": str(zone_zip)}  # no GOROOT: no fallback to the toolchain's zip
    script = 'mount -t tmpfs none /usr/share/zoneinfo && "$0" Europe/Berlin && "$0" Asia/Tokyo'
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, str(program)],
                          env=env, capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["CEST +0200", "error: unknown time zone Asia/Tokyo"]


def test_an_unknown_zone_is_an_error_with_a_suggestion(tmp_path: Path, toolchain: Toolchain) -> None:
    image = image_config(tmp_path, zones=["UTC", "Europe/Berln"])
    with pytest.raises(GosmallError) as caught:
        collect_runtime_files(image, toolchain)
    message = caught.value.message
    assert message.startswith("[tool.gosmall.images.app] zones[1]: 'Europe/Berln' is not a time zone in Go's ")
    assert "zoneinfo.zip" in message and "Did you mean 'Europe/Berlin'?" in message


@pytest.fixture
def host_zoneinfo(tmp_path: Path) -> Path:
    """A small zoneinfo tree shaped like Debian's: files, a relative link, a link to a directory."""
    host = tmp_path / "host" / "zoneinfo"
    (host / "Europe").mkdir(parents=True)
    (host / "Europe" / "Zurich").write_bytes(b"TZif-zurich")
    (host / "Europe" / "Berlin").write_bytes(b"TZif-berlin")
    os.symlink("Zurich", host / "Europe" / "Busingen")
    (host / "Etc").mkdir()
    (host / "Etc" / "UTC").write_bytes(b"TZif-utc")
    os.symlink("Etc/UTC", host / "UTC")
    (host / "posix").mkdir()
    os.symlink("../Europe", host / "posix" / "Europe")
    return host


def test_tzdata_system_keeps_a_linked_zone_as_a_link_and_ships_its_target(
    tmp_path: Path, toolchain: Toolchain, host_zoneinfo: Path
) -> None:
    image = image_config(tmp_path, tzdata="system", zones=["Europe/Busingen"])
    files = collect_runtime_files(image, toolchain, host_zoneinfo=host_zoneinfo)
    tz = {e.path: e for e in files.entries if e.role == "tzdata"}
    assert list(tz) == ["/usr/share/zoneinfo/Europe/Busingen", "/usr/share/zoneinfo/Europe/Zurich"]
    link = tz["/usr/share/zoneinfo/Europe/Busingen"]
    assert (link.kind, link.link_target) == ("symlink", "Zurich")
    assert tz["/usr/share/zoneinfo/Europe/Zurich"].data == b"TZif-zurich"
    assert tz["/usr/share/zoneinfo/Europe/Zurich"].mode == 0o444
    assert files.env == ()  # Go looks in /usr/share/zoneinfo by itself


def test_tzdata_system_without_zones_ships_the_whole_tree(tmp_path: Path, toolchain: Toolchain, host_zoneinfo: Path) -> None:
    files = collect_runtime_files(image_config(tmp_path, tzdata="system"), toolchain, host_zoneinfo=host_zoneinfo)
    tz = {e.path.removeprefix("/usr/share/zoneinfo/"): e for e in files.entries if e.role == "tzdata"}
    assert sorted(tz) == [
        "Etc/UTC", "Europe/Berlin", "Europe/Busingen", "Europe/Zurich", "UTC", "posix/Europe",
    ]  # fmt: skip
    assert (tz["UTC"].kind, tz["UTC"].link_target) == ("symlink", "Etc/UTC")
    assert (tz["posix/Europe"].kind, tz["posix/Europe"].link_target) == ("symlink", "../Europe")


def test_a_system_zone_linked_out_of_the_tree_ships_its_bytes(tmp_path: Path, toolchain: Toolchain, host_zoneinfo: Path) -> None:
    outside = tmp_path / "elsewhere" / "Zone"
    outside.parent.mkdir()
    outside.write_bytes(b"TZif-outside")
    os.symlink(outside, host_zoneinfo / "Custom")
    image = image_config(tmp_path, tzdata="system", zones=["Custom"])
    (entry,) = [e for e in collect_runtime_files(image, toolchain, host_zoneinfo=host_zoneinfo).entries if e.role == "tzdata"]
    assert (entry.path, entry.kind, entry.data) == ("/usr/share/zoneinfo/Custom", "file", b"TZif-outside")


def test_the_build_machines_local_zone_never_enters_the_image(tmp_path: Path, toolchain: Toolchain, host_zoneinfo: Path) -> None:
    # Debian: /usr/share/zoneinfo/localtime -> /etc/localtime -> the machine's own zone. Found shipped as
    # /usr/share/zoneinfo/localtime with tzdata = "system".
    etc_localtime = tmp_path / "etc" / "localtime"
    etc_localtime.parent.mkdir()
    os.symlink(host_zoneinfo / "Etc" / "UTC", etc_localtime)
    os.symlink(etc_localtime, host_zoneinfo / "localtime")
    image = image_config(tmp_path, tzdata="system")
    tz = {e.path: e for e in collect_runtime_files(image, toolchain, host_zoneinfo=host_zoneinfo).entries if e.role == "tzdata"}
    assert "/usr/share/zoneinfo/Etc/UTC" in tz
    assert not any(PurePosixPath(path).name == "localtime" for path in tz)
    with pytest.raises(GosmallError, match=r"zones\[0\]: 'localtime' is not an IANA time zone"):
        image_config(tmp_path, tzdata="system", zones=["localtime"])


def test_a_dangling_system_zone_link_is_skipped_in_a_whole_tree_copy(tmp_path: Path, toolchain: Toolchain, host_zoneinfo: Path) -> None:
    # Debian ships /usr/share/zoneinfo/localtime -> /etc/localtime; containers often have no /etc/localtime.
    os.symlink(tmp_path / "no-such-localtime", host_zoneinfo / "localtime")
    files = by_path(collect_runtime_files(image_config(tmp_path, tzdata="system"), toolchain, host_zoneinfo=host_zoneinfo))
    assert "/usr/share/zoneinfo/localtime" not in files
    assert "/usr/share/zoneinfo/Europe/Zurich" in files


def test_a_dangling_system_zone_named_in_zones_is_an_error(tmp_path: Path, toolchain: Toolchain, host_zoneinfo: Path) -> None:
    os.symlink(tmp_path / "no-such-zone", host_zoneinfo / "Broken")
    image = image_config(tmp_path, tzdata="system", zones=["Broken"])
    with pytest.raises(GosmallError, match="'Broken'"):
        collect_runtime_files(image, toolchain, host_zoneinfo=host_zoneinfo)


@pytest.mark.skipif(not Path("/usr/share/zoneinfo/Europe/Berlin").is_file(), reason="this machine has no tzdata package")
def test_the_real_host_tree_ships_without_a_dangling_link(tmp_path: Path, toolchain: Toolchain) -> None:
    files = by_path(collect_runtime_files(image_config(tmp_path, tzdata="system"), toolchain))
    tz = {path: entry for path, entry in files.items() if entry.role == "tzdata"}
    assert "/usr/share/zoneinfo/Europe/Berlin" in tz
    for path, entry in tz.items():
        assert path.startswith("/usr/share/zoneinfo/")
        if entry.kind == "symlink":
            target = os.path.normpath(os.path.join(os.path.dirname(path), entry.link_target))
            assert target in tz or any(p.startswith(target + "/") for p in tz), f"{path} -> {entry.link_target} dangles"


def test_tzdata_system_without_a_host_tree_says_what_to_install(tmp_path: Path, toolchain: Toolchain) -> None:
    with pytest.raises(GosmallError, match=r"tzdata = \"system\" but this machine has no .*install its tzdata package"):
        collect_runtime_files(image_config(tmp_path, tzdata="system"), toolchain, host_zoneinfo=tmp_path / "none")


@pytest.mark.parametrize("tzdata", ["embed", "none"])
def test_embed_and_none_ship_no_time_zone_files(tmp_path: Path, toolchain: Toolchain, host_zoneinfo: Path, tzdata: str) -> None:
    files = collect_runtime_files(image_config(tmp_path, tzdata=tzdata), toolchain, host_zoneinfo=host_zoneinfo)
    assert [e for e in files.entries if e.role == "tzdata" or "zoneinfo" in e.path] == []
    assert files.env == ()


# -- users and directories -----------------------------------------------------


def test_the_user_database_has_root_and_nonroot_only(tmp_path: Path, toolchain: Toolchain) -> None:
    files = by_path(collect_runtime_files(image_config(tmp_path, tzdata="none"), toolchain))
    assert files["/etc/passwd"].data == (b"root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")
    assert files["/etc/group"].data == b"root:x:0:\nnonroot:x:65532:\n"
    for path in ("/etc/passwd", "/etc/group"):
        assert (files[path].mode, files[path].uid, files[path].gid) == (0o444, 0, 0)


def test_tmp_is_sticky_and_nonroot_gets_a_private_home(tmp_path: Path, toolchain: Toolchain) -> None:
    files = by_path(collect_runtime_files(image_config(tmp_path, tzdata="none"), toolchain))
    assert (files["/tmp"].kind, files["/tmp"].mode, files["/tmp"].uid) == ("dir", 0o1777, 0)
    home = files["/home/nonroot"]
    assert (home.kind, home.mode, home.uid, home.gid) == ("dir", 0o700, 65532, 65532)


@pytest.mark.parametrize("user", ["root", "1000:1000"])
def test_only_nonroot_gets_a_home(tmp_path: Path, toolchain: Toolchain, user: str) -> None:
    files = by_path(collect_runtime_files(image_config(tmp_path, tzdata="none", user=user), toolchain))
    assert "/home/nonroot" not in files
    assert "/tmp" in files


# -- CA certificates ------------------------------------------------------------


def a_certificate() -> bytes:
    """One real PEM certificate (the last in certifi's bundle)."""
    bundle = Path(certifi.where()).read_bytes()
    start = bundle.rindex(b"-----BEGIN CERTIFICATE-----")
    return bundle[start:].strip() + b"\n"


def test_no_ca_bundle_unless_asked(tmp_path: Path, toolchain: Toolchain) -> None:
    files = by_path(collect_runtime_files(image_config(tmp_path, tzdata="none"), toolchain))
    assert "/etc/ssl/certs/ca-certificates.crt" not in files


def test_ca_certs_are_certifis_bundle(tmp_path: Path, toolchain: Toolchain) -> None:
    files = by_path(collect_runtime_files(image_config(tmp_path, tzdata="none", ca_certs=True), toolchain))
    entry = files["/etc/ssl/certs/ca-certificates.crt"]
    assert entry.data == Path(certifi.where()).read_bytes()
    assert (entry.mode, entry.role, entry.uid) == (0o444, "ca_certs", 0)


def test_extra_ca_certs_are_appended_to_the_bundle(tmp_path: Path, toolchain: Toolchain) -> None:
    (tmp_path / "certs").mkdir()
    extra = a_certificate()
    (tmp_path / "certs" / "corp.pem").write_bytes(b"\n\n" + extra + b"\n\n")
    image = image_config(tmp_path, tzdata="none", ca_certs=True, extra_ca_certs=["certs/corp.pem"])
    data = by_path(collect_runtime_files(image, toolchain))["/etc/ssl/certs/ca-certificates.crt"].data
    certifi_bundle = Path(certifi.where()).read_bytes()
    assert data == certifi_bundle.rstrip(b"\n") + b"\n" + extra
    assert b"\n\n-----BEGIN" not in data[len(certifi_bundle) - 2 :]


def test_an_extra_ca_cert_that_is_not_pem_is_rejected(tmp_path: Path, toolchain: Toolchain) -> None:
    (tmp_path / "corp.der").write_bytes(b"\x30\x82\x03\x00binary DER")
    image = image_config(tmp_path, tzdata="none", ca_certs=True, extra_ca_certs=["corp.der"])
    with pytest.raises(GosmallError) as caught:
        collect_runtime_files(image, toolchain)
    message = caught.value.message
    assert message.startswith("[tool.gosmall.images.app] extra_ca_certs: ")
    assert f"{tmp_path / 'corp.der'} holds no PEM certificate" in message


# -- the project's files ----------------------------------------------------------


def test_files_keep_only_the_executable_bit_and_are_owned_by_root(tmp_path: Path, toolchain: Toolchain) -> None:
    static = tmp_path / "static"
    (static / "css").mkdir(parents=True)
    (static / "css" / "site.css").write_text("body{}")
    (static / "index.html").write_text("<h1>hi</h1>")
    (static / "index.html").chmod(0o600)  # a private umask on the build machine
    (static / "run.sh").write_text("#!/bin/sh\n")
    (static / "run.sh").chmod(0o700)
    (tmp_path / "motd").write_text("welcome\n")
    (tmp_path / "motd").chmod(0o666)
    image = image_config(tmp_path, tzdata="none", files=[{"src": "static", "dst": "/srv/static/"}, {"src": "motd", "dst": "/etc/motd"}])
    entries = [e for e in collect_runtime_files(image, toolchain).entries if e.role == "files"]
    assert sorted((e.path, e.kind, oct(e.mode)) for e in entries) == [
        ("/etc/motd", "file", "0o444"),
        ("/srv/static", "dir", "0o555"),
        ("/srv/static/css", "dir", "0o555"),
        ("/srv/static/css/site.css", "file", "0o444"),
        ("/srv/static/index.html", "file", "0o444"),
        ("/srv/static/run.sh", "file", "0o555"),
    ]
    assert all((e.uid, e.gid) == (0, 0) for e in entries)
    assert {e.path: e.data for e in entries}["/srv/static/css/site.css"] == b"body{}"
