"""verify-pins and pin, through `scan_project` / `pin_references` directly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from gosmall.digest import Digest
from gosmall.errors import GosmallError
from gosmall.reference import Reference
from gosmall.registry.client import RegistryClient, RegistryResolver
from gosmall.trust.pinning import enforce_pinning, format_findings, format_pin_result, pin_references, scan_project, scan_root
from tests.registry.test_registry import make_layout
from tests.registry_fixture import push_layout

if TYPE_CHECKING:
    from tests.registry_fixture import LocalRegistry

pytest_plugins = ["tests.registry_fixture"]

FIXTURE_TREE = Path(__file__).resolve().parents[1] / "fixtures" / "pinning" / "tree"


def materialise(target: Path) -> Path:
    """Copy the fixture tree under its real file names (see its README)."""
    for source in sorted(FIXTURE_TREE.rglob("*.fixture")):
        relative = source.relative_to(FIXTURE_TREE).as_posix()[: -len(".fixture")]
        relative = relative.replace("DOCKERFILE", "Dockerfile").replace("CONTAINERFILE", "Containerfile")
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target / relative)
    return target


EXPECTED = [
    (".github/workflows/ci.yml", 6, 16, "golang:1.22", "not-pinned"),
    (".github/workflows/ci.yml", 11, 16, "postgres:16", "not-pinned"),
    (".github/workflows/ci.yml", 14, 24, "alpine:3.20", "not-pinned"),
    (".github/workflows/ci.yml", 20, 14, "${{ matrix.image }}", "unresolvable"),
    (".github/workflows/ci.yml", 24, 15, "golangci/golangci-lint:v1.59", "not-pinned"),
    ("Containerfile", 3, 3, "quay.io/example/base:2.0", "not-pinned"),
    ("Containerfile", 5, 6, "alpine", "not-pinned"),
    ("Dockerfile", 6, 32, "golang:1.22", "not-pinned"),  # ARG GO_VERSION substituted, --platform skipped
    ("Dockerfile", 10, 28, "alpine:3.20", "not-pinned"),  # RUN --mount=…,from=
    ("Dockerfile", 16, 6, "${NODEFAULT}", "unresolvable"),
    ("Dockerfile", 24, 13, "ghcr.io/example/tools:v1", "not-pinned"),  # COPY --from=<image>
    ("Dockerfile", 26, 13, "registry.example.com/Bad:tag", "invalid-reference"),
    ("Dockerfile", 30, 6, "gcr.io/distroless/static:nonroot", "not-pinned"),  # quoted ARG default
    ("broken/docker-compose.yml", 5, 1, "", "invalid-yaml"),
    ("compose.yaml", 4, 12, "nginx:1.27", "not-pinned"),
    ("compose.yaml", 8, 13, "redis:7", "not-pinned"),
    ("compose.yaml", 12, 12, "${REGISTRY}/app:1", "unresolvable"),
    ("k8s/deploy.yaml", 17, 18, "busybox:1.36", "not-pinned"),
    ("k8s/deploy.yaml", 22, 18, "envoyproxy/envoy:v1.30", "not-pinned"),
    ("k8s/deploy.yaml", 35, 34, "python:3.12-slim", "not-pinned"),
    ("k8s/deploy.yaml", 44, 14, "registry.example.com:5000/team/app:v3", "not-pinned"),
    ("k8s/deploy.yaml", 47, 14, "UPPER/Case:1", "invalid-reference"),
    ("pyproject.toml", 10, 15, "debian:12-slim", "not-pinned"),
]


def _tuples(root: Path, result: object) -> list[tuple[str, int, int, str, str]]:
    return [(f.path.relative_to(root).as_posix(), f.line, f.column, f.reference, f.problem) for f in result.findings]  # type: ignore[attr-defined]


def test_fixture_tree_findings(tmp_path: Path) -> None:
    root = materialise(tmp_path / "project")
    result = scan_project(root, output_dir=root / "out")
    assert _tuples(root, result) == EXPECTED
    assert not result.ok
    scanned = {p.relative_to(root).as_posix() for p in result.files}
    # vendor/ and the output dir are never scanned; a YAML without kind: is looked at but holds nothing.
    assert "vendor/Dockerfile" not in scanned and "out/Dockerfile" not in scanned
    assert "docs/notes.yaml" in scanned and "build/app.Dockerfile" in scanned
    # Without output_dir, out/ is an ordinary directory.
    assert root / "out" / "Dockerfile" in scan_project(root).files


def test_text_format(tmp_path: Path) -> None:
    root = materialise(tmp_path / "project")
    text = format_findings(scan_project(root, output_dir=root / "out"), "text", root).splitlines()
    assert len(text) == len(EXPECTED)
    assert "Dockerfile:6:32: golang:1.22: not pinned by digest" in text
    assert "Dockerfile:16:6: ${NODEFAULT}: unresolvable ARG NODEFAULT" in text
    assert (
        "Dockerfile:26:13: registry.example.com/Bad:tag: invalid reference: "
        "invalid reference format: repository name (Bad) must be lowercase"
    ) in text
    assert text[0] == ".github/workflows/ci.yml:6:16: golang:1.22: not pinned by digest"
    assert any(line.startswith("broken/docker-compose.yml:5:1: invalid YAML: ") for line in text)


def test_json_format(tmp_path: Path) -> None:
    root = materialise(tmp_path / "project")
    findings = json.loads(format_findings(scan_project(root, output_dir=root / "out"), "json", root))
    assert [(f["path"], f["line"], f["column"], f["reference"], f["problem"]) for f in findings] == EXPECTED
    assert set(findings[0]) == {"path", "line", "column", "reference", "problem", "message"}
    assert findings[0]["message"] == "golang:1.22: not pinned by digest"


def test_explicit_paths(tmp_path: Path) -> None:
    root = materialise(tmp_path / "project")
    result = scan_project(root, [Path("compose.yaml"), root / "k8s"])
    assert {f.path.relative_to(root).as_posix() for f in result.findings} == {"compose.yaml", "k8s/deploy.yaml"}
    # A file named on the command line is read as a Dockerfile whatever its name.
    (root / "prod.docker").write_text("FROM alpine:3\n")
    assert _tuples(root, scan_project(root, [Path("prod.docker")])) == [("prod.docker", 1, 6, "alpine:3", "not-pinned")]
    # A path that is not there means the scan cannot do its job (exit 2), not a finding (exit 1).
    with pytest.raises(GosmallError) as caught:
        scan_project(root, [Path("nope/Dockerfile")])
    assert caught.value.code == 2 and "nope/Dockerfile: no such file or directory" in caught.value.message


def test_git_checkout_scans_what_git_knows(tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    root = tmp_path / "repo"
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / ".gitignore").write_text("ignored/\n")
    (root / "Dockerfile").write_text("FROM alpine:3\n")  # untracked, not ignored: still scanned
    (root / "ignored").mkdir()
    (root / "ignored" / "Dockerfile").write_text("FROM busybox:1\n")
    (root / "node_modules").mkdir()
    (root / "node_modules" / "Dockerfile").write_text("FROM node:20\n")
    result = scan_project(root)
    assert _tuples(root, result) == [("Dockerfile", 1, 6, "alpine:3", "not-pinned")]


def test_dockerfile_details(tmp_path: Path) -> None:
    digest = "sha256:" + "e" * 64
    (tmp_path / "Dockerfile").write_text(
        "ARG REG=ghcr.io\n"
        "ARG TAG\n"
        f"FROM $REG/org/base:1@{digest} AS Base\n"
        "FROM BASE\n"  # stage names are case-insensitive
        "FROM ${REG}/org/tool:${TAG:-2.0}\n"
        "FROM ${REG}/org/tool:${TAG}\n"
        "COPY --from=base /a /a\n"
        'COPY --from="ghcr.io/org/quoted:1" /a /a\n'
        "FROM scratch\n"
        "ONBUILD RUN true\n"
    )
    result = scan_project(tmp_path)
    assert _tuples(tmp_path, result) == [
        ("Dockerfile", 5, 6, "ghcr.io/org/tool:2.0", "not-pinned"),
        ("Dockerfile", 6, 6, "${REG}/org/tool:${TAG}", "unresolvable"),
        ("Dockerfile", 8, 14, "ghcr.io/org/quoted:1", "not-pinned"),
    ]
    assert result.findings[1].message == "${REG}/org/tool:${TAG}: unresolvable ARG TAG"


def test_bad_input_is_reported_and_the_scan_goes_on(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\x00FROM alpine\n")
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "Dockerfile").symlink_to(tmp_path / "missing")
    (tmp_path / "compose.yaml").write_text("services:\n  web:\n    image: nginx:1\n   bad: indent\n")
    (tmp_path / "k8s.yaml").write_text("kind: Pod\nspec:\n  containers:\n    - image: redis:7\n")
    (tmp_path / "latin1.Dockerfile").write_bytes(b"# caf\xe9\nFROM alpine:3\n")
    result = scan_project(tmp_path)
    rows = _tuples(tmp_path, result)
    assert ("k8s.yaml", 4, 14, "redis:7", "not-pinned") in rows
    assert ("Dockerfile", 1, 1, "", "unreadable") in rows
    assert ("svc/Dockerfile", 1, 1, "", "unreadable") in rows
    assert ("latin1.Dockerfile", 1, 1, "", "unreadable") in rows
    [yaml_problem] = [f for f in result.findings if f.problem == "invalid-yaml"]
    assert (yaml_problem.path.name, yaml_problem.line, yaml_problem.column) == ("compose.yaml", 4, 4)
    by_path = {f.path.relative_to(tmp_path).as_posix(): f.message for f in result.findings}
    assert by_path["Dockerfile"] == "cannot read file: it is a binary file, not text"
    assert by_path["svc/Dockerfile"].startswith("cannot read file: ")


def test_links_are_followed_inside_the_project_only(tmp_path: Path) -> None:
    root = tmp_path / "project"
    (root / "shared").mkdir(parents=True)
    (root / "shared" / "base.Dockerfile").write_text("FROM alpine:3\n")
    (root / "svc").mkdir()
    (root / "svc" / "Dockerfile").symlink_to("../shared/base.Dockerfile")
    (root / "loop.Dockerfile").symlink_to("loop.Dockerfile")
    (tmp_path / "outside.Dockerfile").write_text("FROM busybox\n")
    (root / "out.Dockerfile").symlink_to(tmp_path / "outside.Dockerfile")
    rows = _tuples(root, scan_project(root))
    # The target once, under its own name; the loop unreadable; the link out refused, unread.
    assert rows == [
        ("loop.Dockerfile", 1, 1, "", "unreadable"),
        ("out.Dockerfile", 1, 1, "", "unreadable"),
        ("shared/base.Dockerfile", 1, 6, "alpine:3", "not-pinned"),
    ]
    # Named only through the link, it is shown as named.
    assert _tuples(root, scan_project(root, [root / "svc" / "Dockerfile"])) == [("svc/Dockerfile", 1, 6, "alpine:3", "not-pinned")]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_only_regular_files_are_opened(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "Dockerfile")
    (tmp_path / "zero.Dockerfile").symlink_to("/dev/zero")  # outside the project, and not a file
    (tmp_path / "k8s").mkdir()
    os.mkfifo(tmp_path / "k8s" / "pod.yaml")
    result = scan_project(tmp_path, [Path("Dockerfile"), Path("k8s"), Path("zero.Dockerfile")])
    not_a_file = "cannot read file: it is not a regular file (a FIFO, socket or device); gosmall reads only files"
    assert [(f.path.name, f.message) for f in result.findings] == [
        ("Dockerfile", not_a_file),
        ("pod.yaml", not_a_file),
        (
            "zero.Dockerfile",
            f"cannot read file: it is a symbolic link to /dev/zero, outside the project ({tmp_path.resolve()}); "
            "gosmall never follows a link out of the project. Check or pin that file where it lives, or copy it into the project.",
        ),
    ]


def test_scan_root_is_the_git_work_tree(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path / "repo")], check=True)
    (tmp_path / "repo" / "a" / "b").mkdir(parents=True)
    assert scan_root(tmp_path / "repo" / "a" / "b") == (tmp_path / "repo").resolve()
    (tmp_path / "plain").mkdir()
    assert scan_root(tmp_path / "plain") == (tmp_path / "plain").resolve()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text("FROM alpine\n")
    path.chmod(0)
    try:
        [finding] = scan_project(tmp_path).findings
    finally:
        path.chmod(0o644)
    assert finding.problem == "unreadable" and "Permission denied" in finding.message


def test_enforce_pinning_policies(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM alpine:3\n")
    result = scan_project(tmp_path)
    assert enforce_pinning(result, "off") == ()
    assert enforce_pinning(result, "warn") == ("Dockerfile:1:6: alpine:3: not pinned by digest",)
    with pytest.raises(GosmallError) as caught:
        enforce_pinning(result, "error")
    assert "Dockerfile:1:6: alpine:3: not pinned by digest" in str(caught.value)
    assert "gosmall pin" in str(caught.value) and 'pinning = "warn"' in str(caught.value)
    (tmp_path / "Dockerfile").write_text("FROM alpine:3@sha256:" + "0" * 64 + "\n")
    assert enforce_pinning(scan_project(tmp_path), "error") == ()


# -- pin, against the local registry --------------------------------------------


class _Recording:
    def __init__(self, inner: RegistryResolver) -> None:
        self.inner, self.asked = inner, []  # type: ignore[var-annotated]

    def resolve(self, reference: Reference) -> Digest:
        self.asked.append(str(reference))
        return self.inner.resolve(reference)


def _outside_spans_equal(before: str, after: str, changes: list[tuple[int, int, str, str]]) -> None:
    """`after` is `before` with exactly the changed spans replaced."""
    lines = before.split("\n")
    for line, column, old, new in sorted(changes, reverse=True):
        row = lines[line - 1]
        assert row[column - 1 : column - 1 + len(old)] == old
        lines[line - 1] = row[: column - 1] + new + row[column - 1 + len(old) :]
    assert "\n".join(lines) == after


def test_pin_rewrites_in_place_and_is_idempotent(registry: LocalRegistry, tmp_path: Path) -> None:
    host = registry.host
    base = push_layout(make_layout(tmp_path / "base", content=b"base\n"), f"{host}/pin/base:1.0", client=RegistryClient())
    tool = push_layout(make_layout(tmp_path / "tool", content=b"tool\n"), f"{host}/pin/tool:latest", client=RegistryClient())
    root = tmp_path / "project"
    (root / "k8s").mkdir(parents=True)
    (root / ".github" / "workflows").mkdir(parents=True)
    files = {
        "Dockerfile": (
            "# syntax=docker/dockerfile:1\n"
            f"ARG BASE={host}/pin/base:1.0\n"
            f"FROM --platform=$BUILDPLATFORM {host}/pin/base:1.0 AS build\n"
            "FROM ${BASE}\r\n"  # a CRLF line must stay CRLF
            f"COPY --from={host}/pin/tool /t /t\n"
            f"FROM {host}/pin/missing:9   # not in the registry\n"
        ),
        "compose.yaml": (
            "# keep me\n"
            "services:\n"
            f'  web:\n    image: "{host}/pin/base:1.0"   # quoted, comment after\n'
            f"  tool: {{image: {host}/pin/tool}}\n"
        ),
        "k8s/pod.yaml": f"kind: Pod\nspec:\n  containers:\n  - name: a\n    image: '{host}/pin/base:1.0'\n",
        ".github/workflows/ci.yml": f"jobs:\n  t:\n    steps:\n      - uses: docker://{host}/pin/tool\n",
    }
    for name, text in files.items():
        (root / name).write_bytes(text.encode())
    resolver = _Recording(RegistryResolver(RegistryClient()))

    checked = pin_references(root, check=True, resolver=resolver)
    assert not checked.ok and len(checked.changes) == 7
    assert all((root / n).read_bytes() == t.encode() for n, t in files.items()), "--check must not write"
    assert f"would pin {host}/pin/tool -> {host}/pin/tool:latest@{tool}" in format_pin_result(checked, root)

    result = pin_references(root, check=False, resolver=resolver)
    assert len(result.changes) == 7
    [missing] = result.unresolved
    assert (missing.path.name, missing.line, missing.column, missing.problem) == ("Dockerfile", 6, 6, "resolve-failed")
    assert "HTTP 404" in missing.message
    assert not result.ok  # the missing one is reported, never guessed or dropped

    by_file: dict[str, list[tuple[int, int, str, str]]] = {}
    for change in result.changes:
        by_file.setdefault(change.path.relative_to(root).as_posix(), []).append((change.line, change.column, change.old, change.new))
        assert change.digest in (base, tool)
    for name, text in files.items():
        _outside_spans_equal(text, (root / name).read_bytes().decode(), by_file.get(name, []))
    dockerfile = (root / "Dockerfile").read_bytes().decode()
    assert f"FROM --platform=$BUILDPLATFORM {host}/pin/base:1.0@{base} AS build\n" in dockerfile
    assert f"FROM ${{BASE}}@{base}\r\n" in dockerfile
    assert f"COPY --from={host}/pin/tool:latest@{tool} /t /t\n" in dockerfile
    assert f'image: "{host}/pin/base:1.0@{base}"   # quoted, comment after' in (root / "compose.yaml").read_text()
    assert f"uses: docker://{host}/pin/tool:latest@{tool}\n" in (root / ".github/workflows/ci.yml").read_text()
    # Four places name it, two runs (--check, then pin) asked for it.
    assert resolver.asked.count(f"{host}/pin/base:1.0") == 2, "each reference is resolved once per run"

    # Everything that could be pinned is; only the missing tag is left.
    scan = scan_project(root)
    assert [(f.path.name, f.line, f.problem) for f in scan.findings] == [("Dockerfile", 6, "not-pinned")]
    again = pin_references(root, check=False, resolver=resolver)
    assert again.changes == () and len(again.unresolved) == 1
    snapshot = {n: (root / n).read_bytes() for n in files}
    (root / "Dockerfile").write_bytes(snapshot["Dockerfile"].replace(f"FROM {host}/pin/missing:9   # not in the registry\n".encode(), b""))
    assert pin_references(root, check=True, resolver=resolver).ok
    assert all((root / n).read_bytes() == snapshot[n] for n in files if n != "Dockerfile")
