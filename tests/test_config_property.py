"""Property: whatever a pyproject.toml holds, gosmall builds it or says one GosmallError, never another exception.

Every key of [tool.gosmall] and of an image table gets values of every TOML type (strings hostile
and plain, huge and negative integers, floats, booleans, dates, arrays, tables). Each generated
table goes through everything short of `go build`: config, the compile plan for each platform,
the runtime files, and assembly of the image from a stand-in binary.
"""

from __future__ import annotations

import datetime
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gosmall.build.assemble import PlatformParts, assemble
from gosmall.build.compile import Binary, plan_compile
from gosmall.build.runtime_files import collect_runtime_files
from gosmall.build.source import SourceInfo
from gosmall.build.toolchain import Toolchain, find_module
from gosmall.config import _IMAGE_KEYS, _SMOKE_KEYS, _TOP_KEYS, parse_project
from gosmall.errors import GosmallError

HOSTILE_STRINGS = st.sampled_from(
    [
        "", " ", ".", "..", "/", "//", "../..", "/etc/shadow", "~", "go_app", "./go_app", "static", "linux/amd64",
        "linux/amd46", "nonroot", "root", "0:0", "65532:65532", "4294967295:1", "-1:-1", "12MiB", "0", "0B",
        "9" * 400, "1e309", "nan", "inf", "-5", "20s", "0ms", "[/x]", "[bold]x", "{version}", "a\x00b", "\n",
        "é", "x" * 300, "example.com/app", "UPPER/case", "latest", "zip", "embed", "system", "none", "error",
        "warn", "off", "Europe/Berlin", "localtime", "../etc", "53/udp", "8080", "/healthz", "C:\\\\x",
    ]
)  # fmt: skip
SCALARS = st.one_of(
    HOSTILE_STRINGS,
    st.text(max_size=20),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, 1, -1, 80, 65535, 65536, 4294967294, 4294967295, 2**40, 2**40 + 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.just(datetime.datetime(2026, 1, 2, 3, 4, 5)),
    st.just(datetime.date(2026, 1, 2)),
    st.just(datetime.time(3, 4, 5)),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["src", "dst", "path", "x", "A"]), inner, max_size=3),
    max_leaves=6,
)


def image_tables() -> st.SearchStrategy[dict[str, Any]]:
    keyed = st.dictionaries(st.sampled_from(_IMAGE_KEYS), VALUES, max_size=4)
    smoke = st.dictionaries(st.sampled_from(_SMOKE_KEYS), VALUES, max_size=3)
    return st.builds(
        lambda t, s, with_smoke: {"package": "go_app", **t, **({"smoke": s} if with_smoke else {})}, keyed, smoke, st.booleans()
    )


TABLES = st.builds(
    lambda top, image, name: {**top, "images": {name: image}},
    st.dictionaries(st.sampled_from([k for k in _TOP_KEYS if k != "images"]), VALUES, max_size=3),
    image_tables(),
    st.sampled_from(["app", "go_app", "objects", "UPPER", "a/b", ""]),
)


def fake_toolchain(root: Path) -> Toolchain:
    goroot = root / "goroot"
    (goroot / "lib" / "time").mkdir(parents=True, exist_ok=True)
    zoneinfo = goroot / "lib" / "time" / "zoneinfo.zip"
    if not zoneinfo.exists():
        import zipfile

        with zipfile.ZipFile(zoneinfo, "w", compression=zipfile.ZIP_STORED) as z:
            z.writestr("Europe/Berlin", b"TZif")
    return Toolchain(root / "go", goroot, (1, 27, 3), "PATH")


def attempt(table: dict[str, Any], root: Path) -> None:
    project = parse_project(table, root / "pyproject.toml")
    toolchain = fake_toolchain(root)
    source = SourceInfo("dev", "", "", 0)
    for image in project.images:
        module = find_module(image.package)
        plans = [plan_compile(image, module, p, source.version) for p in image.platforms]
        runtime = collect_runtime_files(image, toolchain, never_ship=(project.output,))
        binary_path = root / "binary"
        binary_path.write_bytes(b"\x7fELF stand-in")
        parts = tuple(PlatformParts(Binary(binary_path, plan.binary_name, plan.platform, 13, plan.cgo), runtime) for plan in plans)
        assemble(image, parts, source)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TABLES)
def test_any_table_builds_or_is_one_gosmall_error(table: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        (root / "go_app").mkdir()
        (root / "go_app" / "main.go").write_text("package main\n\nfunc main() {}\n")
        (root / "go_app" / "go.mod").write_text("module example.com/app\n\ngo 1.22\n")
        (root / "static").mkdir()
        (root / "static" / "index.html").write_text("hi")
        try:
            attempt(table, root)
        except GosmallError as error:
            assert error.message.strip() and "Traceback" not in error.message
            assert error.code == 2
