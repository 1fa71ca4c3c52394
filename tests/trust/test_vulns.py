"""Known vulnerabilities, called or not: a real vendored program, a database the test writes in the published
layout, the console script as a user runs it, gosmall's own output and the same binary in a buildah image, from
a layout and from a loopback registry."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import ssl
import subprocess
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import docker
import pytest

from gosmall.build.toolchain import find_module, find_toolchain
from gosmall.registry.client import RegistryClient
from gosmall.trust.vulns import SemVer, Symbols, affected_version, go_semver
from tests.buildah_fixture import Buildah, put
from tests.conftest import git_commit, gosmall
from tests.registry_fixture import LocalRegistry, push_layout
from tests.trust.test_sarif import valid_log

LIB = "example.com/lib"
LIB_VERSION = "v1.2.3"
MAIN_GO = """package main

import (
	"fmt"
	"os"

	"example.com/lib"
)

func main() {
	p := &lib.Parser{}
	fmt.Fprintln(os.Stdout, lib.Called(p.Parse(fmt.Sprintf("%d", lib.Tiny(len(os.Args))))))
}
"""
LIB_GO = """package lib

import "strings"

type Parser struct{ n int }

//go:noinline
func (p *Parser) Parse(s string) string { p.n++; return strings.Repeat(s, p.n) }

//go:noinline
func Called(s string) string { return "called:" + s }

// Dropped is never called: the linker leaves it out.
func Dropped(s string) string { return strings.ToUpper(s) + "dropped" }

// Tiny is inlined at its only call site: no function of its own in the binary.
func Tiny(x int) int { return x + 1 }
"""


def write_program(root: Path) -> None:
    """A module that vendors example.com/lib at v1.2.3, as real projects vendor."""
    (root / "vendor" / LIB).mkdir(parents=True)
    (root / "go.mod").write_text(f"module example.com/app\n\ngo 1.22\n\nrequire {LIB} {LIB_VERSION}\n")
    (root / "vendor" / "modules.txt").write_text(f"# {LIB} {LIB_VERSION}\n## explicit\n{LIB}\n")
    (root / "vendor" / LIB / "lib.go").write_text(LIB_GO)
    (root / "main.go").write_text(MAIN_GO)


def write_project(root: Path, extra: str = "") -> Path:
    write_program(root)
    (root / "pyproject.toml").write_text(
        f'[project]\nname = "app"\nversion = "0"\n\n[tool.gosmall]\nplatforms = ["linux/amd64"]\n{extra}\n'
        '[tool.gosmall.images.app]\npackage = "."\nrepository = "example.com/vulns/app"\n'
    )
    (root / ".gitignore").write_text("dist/\n")
    git_commit(root)
    return root


def go_version() -> str:
    """The Go that builds the tests (`go env GOVERSION`), never a number written here."""
    toolchain = find_toolchain(find_module(Path(__file__).resolve().parents[2] / "go_app"))
    return subprocess.run([str(toolchain.go), "env", "GOVERSION"], capture_output=True, text=True, check=True).stdout.strip()


def record(vuln_id: str, module: str, events: Sequence[dict[str, str]], package: str, symbols: Sequence[str]) -> dict[str, Any]:
    return {
        "schema_version": "1.3.1",
        "id": vuln_id,
        "modified": "2026-11-01T00:00:00Z",
        "published": "2026-10-01T00:00:00Z",
        "aliases": [f"CVE-2026-{vuln_id[-4:]}", f"GHSA-{vuln_id[-4:]}-aaaa-bbbb"],
        "summary": f"A flaw in {package} ({vuln_id})",
        "affected": [
            {
                "package": {"name": module, "ecosystem": "Go"},
                "ranges": [{"type": "SEMVER", "events": list(events)}],
                "ecosystem_specific": {"imports": [{"path": package, "symbols": list(symbols)}]},
            }
        ],
    }


def stdlib_record(go: str) -> dict[str, Any]:
    """A stdlib record affecting the Go that builds the tests: fixed in its next patch release."""
    major, minor, patch = (go_semver(go) or "").lstrip("v").split("-")[0].split(".")
    return record("GO-2026-0006", "stdlib", [{"introduced": "0"}, {"fixed": f"{major}.{minor}.{int(patch) + 1}"}], "fmt", ["Sprintf"])


def records(go: str) -> list[dict[str, Any]]:
    return [
        record("GO-2026-0001", LIB, [{"introduced": "0"}, {"fixed": "1.3.0"}], LIB, ["Called", "Parser.Parse"]),  # called
        record("GO-2026-0002", LIB, [{"introduced": "1.0.0"}, {"fixed": "1.4.0"}], LIB, ["Dropped"]),  # imported, not called
        record("GO-2026-0003", LIB, [{"introduced": "0"}, {"fixed": "1.2.4"}], LIB, ["Tiny"]),  # inlined: called
        record("GO-2026-0004", LIB, [{"introduced": "0"}, {"fixed": "1.2.0"}], LIB, ["Called"]),  # fixed before v1.2.3
        # Pseudo-versions: from a commit before v1.2.3 to one just after it (a pre-release of v1.2.4): affected.
        record("GO-2026-0005", LIB, [{"introduced": "0.0.0-20200101000000-abcdefabcdef"}, {"fixed": "1.2.4-0.20260102030405-0123456789ab"}], LIB, ["Called"]),
        stdlib_record(go),
        record("GO-2026-0007", "example.com/other", [{"introduced": "0"}], "example.com/other", ["F"]),  # a module the binary lacks
        windows_only(record("GO-2026-0008", LIB, [{"introduced": "0"}], LIB, ["Called"])),  # only Windows code is affected
    ]  # fmt: skip


def windows_only(entry: dict[str, Any]) -> dict[str, Any]:
    entry["affected"][0]["ecosystem_specific"]["imports"][0]["goos"] = ["windows"]
    return entry


def write_db(root: Path, entries: Sequence[dict[str, Any]], *, gz: bool = False) -> Path:
    """The published layout: index/db.json, index/modules.json, ID/<id>.json (or each as .json.gz)."""

    def put_json(relative: str, document: Any) -> None:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps(document).encode()
        if gz:
            (path.parent / (path.name + ".gz")).write_bytes(gzip.compress(data))
        else:
            path.write_bytes(data)

    modules: dict[str, list[dict[str, str]]] = {}
    for entry in entries:
        put_json(f"ID/{entry['id']}.json", entry)
        for affected in entry["affected"]:
            modules.setdefault(affected["package"]["name"], []).append({"id": entry["id"], "modified": entry["modified"]})
    put_json("index/modules.json", [{"path": path, "vulns": vulns} for path, vulns in modules.items()])
    put_json("index/db.json", {"modified": "2026-11-01T00:00:00Z"})
    return root


@dataclass(frozen=True)
class Built:
    root: Path
    output: Path
    db: Path
    go: str
    build: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The program built by `gosmall build-small` (stripped, -s -w) with a database configured and vulns = "warn"."""
    go = go_version()
    db = write_db(tmp_path_factory.mktemp("db") / "vulndb", records(go))
    root = write_project(tmp_path_factory.mktemp("vulns") / "project", f'vulndb = "{db}"\n')
    done = gosmall("build-small", cwd=root, env={"GOVULNDB": ""})
    assert done.returncode == 0, done.stderr
    return Built(root, root / "dist" / "app", db, go, done)


EXPECTED = {
    "GO-2026-0001": ("called", [f"{LIB}.Called", f"{LIB}.Parser.Parse"]),
    "GO-2026-0003": ("called", [f"{LIB}.Tiny"]),
    "GO-2026-0005": ("called", [f"{LIB}.Called"]),
    "GO-2026-0006": ("called", ["fmt.Sprintf"]),
    "GO-2026-0002": ("imported", []),
}


def findings(text: str) -> dict[str, tuple[str, list[str]]]:
    """{id: (status, symbols)} of every binary of every target in `gosmall vulns --format json`."""
    out: dict[str, tuple[str, list[str]]] = {}
    for target in json.loads(text):
        for binary in target["binaries"]:
            for f in binary["findings"]:
                out[f["id"]] = (f["status"], f["symbols"])
    return out


def vulns(*args: str, cwd: Path, db: Path | str | None = None) -> subprocess.CompletedProcess[str]:
    return gosmall("vulns", *args, cwd=cwd, env={"GOVULNDB": str(db) if db is not None else ""})


def test_called_imported_inlined_pseudo_versions_and_stdlib(built: Built) -> None:
    done = vulns("--format", "json", cwd=built.root, db=built.db)
    assert done.returncode == 1, done.stderr  # called ones: exit 1
    assert findings(done.stdout) == EXPECTED  # 0004 is fixed before v1.2.3; 0007 is another module's; 0008 only Windows's
    binary = json.loads(done.stdout)[0]["binaries"][0]
    assert (binary["platform"], binary["path"], binary["go_version"]) == ("linux/amd64", "/app", built.go)
    by_id = {f["id"]: f for f in binary["findings"]}
    assert by_id["GO-2026-0001"]["version"] == LIB_VERSION and by_id["GO-2026-0001"]["fixed"] == "v1.3.0"
    assert by_id["GO-2026-0006"]["module"] == "stdlib" and by_id["GO-2026-0006"]["version"] == go_semver(built.go)
    assert by_id["GO-2026-0001"]["aliases"] == ["CVE-2026-0001", "GHSA-0001-aaaa-bbbb"]


def test_text_lists_called_first_then_imported_and_all_counts_imported(built: Built) -> None:
    done = vulns(cwd=built.root, db=built.db)  # the default target: the project's outputs
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].endswith(f"linux/amd64 /app ({built.go}): 4 called, 1 imported, not called")
    statuses = [line.split()[0] for line in lines if line.startswith("  ") and not line.startswith("    ")]
    assert statuses == ["CALLED"] * 4 + ["IMPORTED"]
    assert "  CALLED GO-2026-0001 (CVE-2026-0001, GHSA-0001-aaaa-bbbb): A flaw in example.com/lib (GO-2026-0001)" in lines
    assert f"    {LIB}@{LIB_VERSION}; fixed in v1.3.0" in lines
    assert f"    found: {LIB}.Tiny" in lines
    # Without the called ones, exit 0; with --all the imported one is still worth 1.
    only_imported = write_db(built.root.parent / "db-imported", [r for r in records(built.go) if r["id"] == "GO-2026-0002"])
    assert vulns(str(built.output), cwd=built.root, db=only_imported).returncode == 0
    assert vulns(str(built.output), "--all", cwd=built.root, db=only_imported).returncode == 1


def test_gzip_copies_and_file_urls_are_read_alike(built: Built, tmp_path: Path) -> None:
    db = write_db(tmp_path / "gz", records(built.go), gz=True)
    assert findings(vulns(str(built.output), "--format", "json", "--db", db.as_uri(), cwd=built.root).stdout) == EXPECTED


def test_an_https_database_is_read_from_the_server_gz_when_json_is_not_there(built: Built, tmp_path: Path) -> None:
    """A real TLS server on loopback serving only the .json.gz copies; the client trusts its certificate via SSL_CERT_FILE."""
    db = write_db(tmp_path / "served", records(built.go), gz=True)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    asked: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(db), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            asked.append(f"{self.command} {self.path} {args[1] if len(args) > 1 else ''}")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"https://127.0.0.1:{server.server_address[1]}"
        done = gosmall(
            "vulns", str(built.output), "--format", "json", "--db", url, cwd=built.root, env={"SSL_CERT_FILE": str(cert), "GOVULNDB": ""}
        )
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 1, done.stderr
    assert findings(done.stdout) == EXPECTED
    # Only the records of modules the binary has were asked for: never example.com/other's.
    records_asked = {line.split()[1] for line in asked if line.startswith("GET /ID/") and line.endswith("200")}
    assert records_asked == {
        f"/ID/{i}.json.gz"
        for i in ("GO-2026-0001", "GO-2026-0002", "GO-2026-0003", "GO-2026-0004", "GO-2026-0005", "GO-2026-0006", "GO-2026-0008")
    }


def test_warn_puts_a_size_table_line_and_report_json_ids(built: Built) -> None:
    assert "known vulnerabilities" in built.build.stdout and "4 called / 1 imported" in built.build.stdout
    report = json.loads((built.output / "report.json").read_text())
    assert report["platforms"]["linux/amd64"]["vulns"] == {
        "called": ["GO-2026-0001", "GO-2026-0003", "GO-2026-0005", "GO-2026-0006"],
        "imported": ["GO-2026-0002"],
        "version_unknown": [],
    }
    assert "GO-2026-0001" in built.build.stderr + built.build.stdout  # the warning names them


def test_error_policy_fails_with_1_and_writes_nothing(built: Built, tmp_path: Path) -> None:
    root = write_project(tmp_path / "project", f'vulndb = "{built.db}"\nvulns = "error"\n')
    done = gosmall("build-small", cwd=root, env={"GOVULNDB": ""})
    assert done.returncode == 1, done.stderr
    assert "GO-2026-0001" in done.stderr and 'vulns = "error"' in done.stderr and "nothing was written" in done.stderr
    assert not (root / "dist" / "app").exists()


def test_an_up_to_date_build_is_checked_again_when_the_policy_or_the_database_changes(built: Built, tmp_path: Path) -> None:
    db = write_db(tmp_path / "db", [r for r in records(built.go) if r["id"] == "GO-2026-0002"])
    root = write_project(tmp_path / "project", f'vulndb = "{db}"\n')
    first = gosmall("build-small", cwd=root, env={"GOVULNDB": ""})
    assert first.returncode == 0 and "0 called / 1 imported" in first.stdout, first.stderr
    written = (root / "dist" / "app" / "report.json").read_bytes()
    # A called record appears in the database: the same sources, but not up to date.
    write_db(db, records(built.go))
    second = gosmall("build-small", cwd=root, env={"GOVULNDB": ""})
    assert second.returncode == 0 and "4 called / 1 imported" in second.stdout and "up to date" not in second.stdout, second.stderr
    # vulns = "error" now fails the build and leaves the output as it was.
    pyproject = root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(f'vulndb = "{db}"\n', f'vulndb = "{db}"\nvulns = "error"\n'))
    third = gosmall("build-small", cwd=root, env={"GOVULNDB": ""})
    assert third.returncode == 1, third.stdout + third.stderr
    assert (root / "dist" / "app" / "report.json").read_bytes() != written  # the second build's, untouched by the third
    assert json.loads((root / "dist" / "app" / "report.json").read_text())["platforms"]["linux/amd64"]["vulns"]["called"]


def test_no_database_configured_says_nothing_in_build_small_and_vulns_says_how(tmp_path: Path, built: Built) -> None:
    root = write_project(tmp_path / "project")
    done = gosmall("build-small", cwd=root, env={"GOVULNDB": ""})
    assert done.returncode == 0, done.stderr
    assert "vulnerab" not in done.stdout + done.stderr
    assert "vulns" not in json.loads((root / "dist" / "app" / "report.json").read_text())["platforms"]["linux/amd64"]
    missing = vulns(cwd=root)
    assert missing.returncode == 2 and missing.stdout == ""
    assert "GOVULNDB" in missing.stderr and "--db" in missing.stderr and "index/modules.json" in missing.stderr


def test_no_target_outside_a_project_is_exit_2_asking_for_one(tmp_path: Path, built: Built) -> None:
    done = vulns(cwd=tmp_path, db=built.db)
    assert done.returncode == 2 and "Name a TARGET" in done.stderr and done.stdout == "", done.stderr


@pytest.mark.parametrize("damage", ["bad-json", "missing-id", "mismatched-id", "bad-index"])
def test_a_damaged_database_is_exit_2_naming_the_file(built: Built, tmp_path: Path, damage: str) -> None:
    db = write_db(tmp_path / "db", records(built.go))
    broken = {
        "bad-json": db / "ID" / "GO-2026-0003.json",
        "missing-id": db / "ID" / "GO-2026-0002.json",
        "mismatched-id": db / "ID" / "GO-2026-0001.json",
        "bad-index": db / "index" / "modules.json",
    }[damage]
    if damage == "missing-id":
        broken.unlink()
    elif damage == "mismatched-id":
        broken.write_text(json.dumps({**json.loads(broken.read_text()), "id": "GO-2026-9999"}))
    else:
        broken.write_text('{"id": "GO-2026-0003", "affected": [')
    done = vulns(str(built.output), cwd=built.root, db=db)
    assert done.returncode == 2, done.stdout + done.stderr
    assert str(broken) in done.stderr and "Traceback" not in done.stderr and done.stdout == ""


def test_a_record_of_odd_shapes_is_data_not_a_crash(built: Built, tmp_path: Path) -> None:
    odd = record("GO-2026-0001", LIB, [{"introduced": "0"}], LIB, ["Called"])
    odd["aliases"] = "CVE-2026-0001"
    odd["affected"][0]["ranges"] = {"type": "SEMVER"}
    odd["affected"].append({"package": {"name": LIB}, "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, "x", {}]}],
                            "ecosystem_specific": {"imports": [{"path": LIB, "symbols": "Called", "goos": "linux"}]}})  # fmt: skip
    done = vulns(str(built.output), "--format", "json", cwd=built.root, db=write_db(tmp_path / "db", [odd]))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    # The second entry affects every version; its symbols are no list, so the package's functions count.
    assert findings(done.stdout) == {"GO-2026-0001": ("called", [f"{LIB}.*"])}


def test_sarif_passes_the_schema_with_the_id_as_rule_and_the_binary_as_location(built: Built) -> None:
    done = vulns(str(built.output), "--format", "sarif", cwd=built.root, db=built.db)
    assert done.returncode == 1, done.stderr
    log = valid_log(done.stdout)
    results = log["runs"][0]["results"]
    assert sorted({r["ruleId"] for r in results}) == sorted(EXPECTED)
    assert {r["locations"][0]["logicalLocations"][0]["name"] for r in results} == {"/app"}
    assert {r["ruleId"]: r["level"] for r in results}["GO-2026-0002"] == "warning"
    assert {r["ruleId"]: r["level"] for r in results}["GO-2026-0003"] == "error"


def test_the_same_binary_in_a_buildah_image_from_a_layout_and_a_registry(built: Built, buildah: Buildah, registry: LocalRegistry) -> None:
    binary = _binary_of(built)

    def plant(root: Path) -> None:
        put(root, "/usr/local/bin/app", binary)
        put(root, "/bin/helper", binary)

    layout = buildah.image(plant, entrypoint=("/usr/local/bin/app",))
    from_layout = vulns(str(layout), "--format", "json", cwd=built.root, db=built.db)
    assert from_layout.returncode == 1, from_layout.stderr
    assert findings(from_layout.stdout) == EXPECTED
    # Every Go binary is checked, not only the entrypoint.
    paths = [b["path"] for b in json.loads(from_layout.stdout)[0]["binaries"]]
    assert sorted(paths) == ["/bin/helper", "/usr/local/bin/app"]
    digest = push_layout(layout, f"{registry.host}/vulns/app:1", client=RegistryClient())
    from_registry = vulns(f"docker://{registry.host}/vulns/app@{digest}", "--format", "json", cwd=built.root, db=built.db)
    assert from_registry.returncode == 1, from_registry.stderr
    assert json.loads(from_registry.stdout)[0]["binaries"] == json.loads(from_layout.stdout)[0]["binaries"]


@pytest.mark.docker
def test_the_same_image_by_engine_name(built: Built, docker_client: docker.DockerClient) -> None:
    tag = f"gosmall-vulns-test:{os.getpid()}-{uuid.uuid4().hex[:8]}"
    (loaded,) = docker_client.images.load((built.output / "image.tar").read_bytes())
    loaded.tag(tag)
    try:
        by_name = vulns(tag, "--format", "json", cwd=built.root, db=built.db)
    finally:
        # Only the tags (this one, and the archive's own, which only these tests use): the image may be another run's too.
        for name in (tag, "example.com/vulns/app:latest"):
            docker_client.images.remove(name)
    assert by_name.returncode == 1, by_name.stderr
    assert findings(by_name.stdout) == EXPECTED
    assert json.loads(by_name.stdout)[0]["binaries"][0]["path"] == "/app"


def _binary_of(built: Built) -> bytes:
    """The stripped binary gosmall built, out of its own image.tar (the layer holds /app)."""
    import io
    import tarfile

    with tarfile.open(built.output / "image.tar") as archive:
        manifest = json.loads(archive.extractfile("manifest.json").read())  # type: ignore[union-attr]
        layer = archive.extractfile(manifest[0]["Layers"][0]).read()  # type: ignore[union-attr]
    with tarfile.open(fileobj=io.BytesIO(layer)) as inner:
        return inner.extractfile("app").read()  # type: ignore[union-attr]


def test_a_directory_replacement_is_version_unknown_never_guessed(tmp_path: Path, built: Built) -> None:
    root = tmp_path / "project"
    write_project(root)
    shutil.move(str(root / "vendor" / LIB), str(tmp_path / "lib"))
    shutil.rmtree(root / "vendor")
    (tmp_path / "lib" / "go.mod").write_text(f"module {LIB}\n\ngo 1.22\n")
    (root / "go.mod").write_text(f"module example.com/app\n\ngo 1.22\n\nrequire {LIB} {LIB_VERSION}\n\nreplace {LIB} => ../lib\n")
    git_commit(root, "replace")
    assert gosmall("build-small", cwd=root, env={"GOVULNDB": ""}).returncode == 0
    done = vulns(str(root / "dist" / "app"), "--format", "json", cwd=root, db=built.db)
    found = findings(done.stdout)
    assert {i for i, (status, _) in found.items() if status == "unknown"} == {
        "GO-2026-0001",
        "GO-2026-0002",
        "GO-2026-0003",
        "GO-2026-0004",
        "GO-2026-0005",
    }
    assert found["GO-2026-0006"][0] == "called"
    assert done.returncode == 1  # the stdlib one is called; the unknown ones are not counted as found
    assert "version unknown" in vulns(str(root / "dist" / "app"), cwd=root, db=built.db).stdout


# --- the rules, on their own --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "events", "affected", "fixed"),
    [
        ("v1.2.3", [{"introduced": "0"}, {"fixed": "1.3.0"}], True, "v1.3.0"),
        ("v1.3.0", [{"introduced": "0"}, {"fixed": "1.3.0"}], False, None),
        ("v1.2.3", [{"introduced": "1.2.4"}], False, None),
        ("v1.2.3", [{"introduced": "0"}, {"last_affected": "1.2.3"}], True, None),
        ("v1.2.4", [{"introduced": "0"}, {"last_affected": "1.2.3"}], False, None),
        ("v1.2.3", [{"introduced": "v1.0.0"}, {"fixed": "v1.1.0"}, {"introduced": "v1.2.0"}, {"fixed": "v1.2.5"}], True, "v1.2.5"),
        ("v1.1.5", [{"introduced": "v1.0.0"}, {"fixed": "v1.1.0"}, {"introduced": "v1.2.0"}, {"fixed": "v1.2.5"}], False, None),
        ("v0.0.0-20210101000000-abcdefabcdef", [{"introduced": "0"}, {"fixed": "0.0.0-20220101000000-abcdefabcdef"}], True, "v0.0.0-20220101000000-abcdefabcdef"),
        ("v0.0.0-20230101000000-abcdefabcdef", [{"introduced": "0"}, {"fixed": "0.0.0-20220101000000-abcdefabcdef"}], False, None),
        ("v1.2.4-0.20200101000000-abcdefabcdef", [{"introduced": "0"}, {"fixed": "1.2.4"}], True, "v1.2.4"),
        ("v2.0.0+incompatible", [{"introduced": "2.0.0"}, {"fixed": "2.1.0+incompatible"}], True, "v2.1.0+incompatible"),
        ("v1.0.0-rc.1", [{"introduced": "0"}, {"fixed": "1.0.0"}], True, "v1.0.0"),
    ],
)  # fmt: skip
def test_osv_semver_ranges(version: str, events: list[dict[str, str]], affected: bool, fixed: str | None) -> None:
    parsed = SemVer.parse(version)
    assert parsed is not None
    assert affected_version(parsed, [{"type": "SEMVER", "events": events}]) == (affected, fixed)


def test_several_ranges_and_other_range_types() -> None:
    version = SemVer.parse("v1.5.0")
    assert version is not None
    ranges = [{"type": "GIT", "events": [{"introduced": "0"}]}, {"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "1.0.0"}]}]
    assert affected_version(version, ranges) == (False, None)
    ranges.append({"type": "SEMVER", "events": [{"introduced": "1.5.0"}, {"fixed": "1.5.1"}]})
    assert affected_version(version, ranges) == (True, "v1.5.1")


def test_go_versions_as_the_stdlib_module() -> None:
    assert go_semver("go1.27.3") == "v1.27.3"
    assert go_semver("go1.21") == "v1.21.0"
    assert go_semver("go1.21rc2") == "v1.21.0-rc.2"
    assert go_semver("go1.22.1 X:boringcrypto") == "v1.22.1"
    assert go_semver("devel go1.28-abcdef") is None


@dataclass(frozen=True)
class NamesOnly:
    """The matching rules on their own: a function table of given names (the real one is read in the tests above)."""

    linked: frozenset[str]
    inlined: frozenset[str]
    inline_trees: bool = True

    @property
    def names(self) -> frozenset[str]:
        return self.linked | self.inlined

    def is_inlined(self, name: str) -> bool:
        return name in self.inlined


def test_function_names_as_govulncheck_names_them() -> None:
    linked = {
        "example.com/lib.(*Parser).Parse", "example.com/lib.Parser.String", "net/http.(*Server).Serve", "fmt.Sprintf",
        "gopkg.in/yaml%2ev3.Unmarshal", "example.com/g.Map[go.shape.int,go.shape.string]", "example.com/g.(*List[go.shape.int]).Push",
        "example.com/h.(*T).Close-fm", "main.run", "go:buildid", "type:.eq.[2]string",
    }  # fmt: skip
    symbols = Symbols(lambda: NamesOnly(frozenset(linked), frozenset({"example.com/lib.Tiny"})), "example.com/app")  # type: ignore[arg-type, return-value]
    for package, symbol in [
        ("example.com/lib", "Parser.Parse"), ("example.com/lib", "Parser.String"), ("example.com/lib", "Tiny"),
        ("net/http", "Server.Serve"), ("fmt", "Sprintf"), ("gopkg.in/yaml.v3", "Unmarshal"), ("example.com/g", "Map"),
        ("example.com/g", "List.Push"), ("example.com/h", "T.Close"), ("example.com/app", "run"),
    ]:  # fmt: skip
        assert symbols.has(package, symbol), (package, symbol)
    assert (
        not symbols.has("example.com/lib", "Parse")
        and not symbols.has("fmt", "Printf")
        and not symbols.has("gopkg.in/yaml", "v3.Unmarshal")
    )
    assert symbols.any_in("gopkg.in/yaml.v3") and symbols.any_in("example.com/app") and not symbols.any_in("example.com/li")
    assert not symbols.any_in("net") and not symbols.any_in("go:buildid")
