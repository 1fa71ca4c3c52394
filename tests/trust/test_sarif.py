"""`audit --format sarif` and `verify-pins --format sarif`: valid SARIF 2.1.0 carrying what the text output says.

The independent validator is the SARIF 2.1.0 (Errata 01) JSON schema OASIS publishes,
vendored in tests/vectors (README there). When Microsoft's SARIF Multitool is installed
(`npm install @microsoft/sarif-multitool`, then GOSMALL_SARIF_MULTITOOL=path/to/sarif-multitool
or `sarif-multitool` on PATH), its `validate` runs on the same logs too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from jsonschema import Draft4Validator

from gosmall import __version__
from gosmall.audit_rules import RULES
from gosmall.build.compile import host_platform
from gosmall.images.model import Platform
from gosmall.trust.pinning import PROBLEM_HELP
from gosmall.trust.sarif import artifact_uri
from tests.buildah_fixture import Buildah, put
from tests.conftest import VECTORS, BuiltProject, gosmall

TOKEN = "planted-value-0000"


@cache
def schema_validator() -> Draft4Validator:
    schema = json.loads((VECTORS / "sarif-schema-2.1.0.json").read_text())
    return Draft4Validator(schema, format_checker=Draft4Validator.FORMAT_CHECKER)


def valid_log(text: str) -> dict[str, Any]:
    """The one-run SARIF log `text` is, after the schema found nothing wrong with it."""
    log = json.loads(text)
    problems = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in schema_validator().iter_errors(log)]
    assert problems == []
    assert log["version"] == "2.1.0" and len(log["runs"]) == 1
    driver = log["runs"][0]["tool"]["driver"]
    assert (driver["name"], driver["version"]) == ("gosmall", __version__)
    for result in log["runs"][0]["results"]:
        # What GitHub code scanning needs of every result, or it refuses the whole file.
        (location,) = result["locations"]
        uri = location["physicalLocation"]["artifactLocation"]["uri"]
        assert uri and (":" not in uri.split("/")[0] or uri.startswith("file:///")), uri
        assert driver["rules"][result["ruleIndex"]]["id"] == result["ruleId"]
    return log


def multitool() -> str | None:
    return os.environ.get("GOSMALL_SARIF_MULTITOOL") or shutil.which("sarif-multitool")


def multitool_errors(log: Path) -> list[str]:
    tool = multitool()
    assert tool is not None
    out = log.with_suffix(".validation.sarif")
    done = subprocess.run(
        [tool, "validate", str(log), "-o", str(out), "--log", "ForceOverwrite"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(out.read_text())["runs"][0]["results"]
    return [f"{r['ruleId']}: {r['message']}" for r in results if r.get("level", "warning") == "error"]


# -- audit ---------------------------------------------------------------------------------------------


def audit_lines(target: Path, cwd: Path, *args: str) -> tuple[list[str], dict[str, Any]]:
    text = gosmall("audit", str(target), *args, cwd=cwd)
    sarif = gosmall("audit", str(target), "--format", "sarif", *args, cwd=cwd)
    assert text.returncode == sarif.returncode and sarif.returncode in (0, 1), sarif.stderr
    return text.stdout.splitlines(), valid_log(sarif.stdout)


def as_lines(log: dict[str, Any]) -> list[str]:
    """The text line each result stands for: platform: path-or-key: rule: finding."""
    out = []
    for result in log["runs"][0]["results"]:
        (logical,) = result["locations"][0]["logicalLocations"]
        where, message = result["message"]["text"].split(": ", 1)
        assert where == logical["name"]
        out.append(f"{result['properties']['platform']}: {where}: {result['ruleId']}: {message}")
    return out


@pytest.mark.skipif(host_platform() != Platform.parse("linux/amd64"), reason="needs gcc building linux/amd64 programs")
def test_audit_sarif_of_a_buildah_image_carries_the_text_findings(buildah: Buildah, static_app: bytes, tmp_path: Path) -> None:
    def plant(root: Path) -> None:
        put(root, "/app", static_app)
        put(root, "/usr/bin/helper", static_app, 0o4755)
        put(root, "/etc/passwd", b"root:x:0:0:root:/:/sbin/nologin\nroot2:x:0:0::/:/sbin/nologin\n", 0o644)
        put(root, "/srv/.notes.swp", b"b0VIM", 0o644)

    target = buildah.image(plant, env=[f"DB_PASSWORD={TOKEN}"], labels={}, destination="docker-archive")
    lines, log = audit_lines(target, target.parent)
    assert as_lines(log) == lines
    assert {line.split(": ")[2] for line in lines} == {
        "secret-in-env", "setuid", "unnecessary-file", "duplicate-id", "no-healthcheck", "missing-source-label",
    }  # fmt: skip
    assert TOKEN not in json.dumps(log)
    run = log["runs"][0]
    rules = {rule["id"]: rule for rule in run["tool"]["driver"]["rules"]}
    assert list(rules) == [rule.id for rule in RULES]
    for rule in RULES:
        described = rules[rule.id]
        assert described["defaultConfiguration"]["level"] == ("error" if rule.level == "error" else "note")
        assert described["shortDescription"]["text"] == rule.summary and described["help"]["text"] == rule.help
        assert described.get("properties", {}).get("tags", []) == ([rule.checkpoint] if rule.checkpoint else [])
    levels = {(r["ruleId"], r["level"]) for r in run["results"]}
    assert ("setuid", "error") in levels and ("no-healthcheck", "note") in levels and ("missing-source-label", "note") in levels
    for result in run["results"]:
        location = result["locations"][0]
        # Not a project's output: the archive itself, relative to where audit ran.
        assert location["physicalLocation"] == {"artifactLocation": {"uri": target.name}, "region": {"startLine": 1}}
        (logical,) = location["logicalLocations"]
        assert logical["fullyQualifiedName"] == f"{target}:linux/amd64:{logical['name']}"
    assert rules["secret-in-env"]["properties"]["tags"] == ["CIS-DI-0010"]
    if multitool():
        (tmp_path / "audit.sarif").write_text(json.dumps(log))
        assert multitool_errors(tmp_path / "audit.sarif") == []


def test_audit_sarif_of_a_project_output_points_at_its_table(built_hello: BuiltProject, tmp_path: Path) -> None:
    # The sample declares its source; without that label, and with no origin remote, the audit has a finding to place.
    root = tmp_path / "project"
    shutil.copytree(built_hello.root, root, ignore=shutil.ignore_patterns("dist"))
    pyproject = root / "pyproject.toml"
    pyproject.write_text("".join(line for line in pyproject.read_text().splitlines(keepends=True) if not line.startswith("labels = ")))
    built = gosmall("build-small", cwd=root, env={"SOURCE_DATE_EPOCH": ""})
    assert built.returncode == 0, built.stderr
    lines, log = audit_lines(root / "dist" / "hello", root)
    assert lines and as_lines(log) == lines  # information only: missing-source-label
    header = pyproject.read_text().splitlines().index("[tool.gosmall.images.hello]") + 1
    for result in log["runs"][0]["results"]:
        assert result["level"] == "note"
        assert result["locations"][0]["physicalLocation"] == {
            "artifactLocation": {"uri": "pyproject.toml"},
            "region": {"startLine": header},
        }


def test_a_reference_or_a_path_becomes_a_relative_uri_code_scanning_accepts() -> None:
    assert artifact_uri("dist/hello/image.tar") == "dist/hello/image.tar"
    assert artifact_uri("my app/Dockerfile") == "my%20app/Dockerfile"
    assert artifact_uri("/srv/x y/image.tar") == "file:///srv/x%20y/image.tar"
    reference = "docker://127.0.0.1:5000/app@sha256:" + "a" * 64
    encoded = artifact_uri(reference)
    assert ":" not in encoded and "@" not in encoded and unquote(encoded) == reference


# -- verify-pins ---------------------------------------------------------------------------------------


def test_verify_pins_sarif_carries_the_text_findings_with_file_line_and_column(tmp_path: Path) -> None:
    root = tmp_path / "infra"
    (root / "my app").mkdir(parents=True)
    (root / "my app" / "Dockerfile").write_text("FROM alpine:3.19\nFROM golang:1.22@sha256:" + "0" * 64 + " AS build\n")
    (root / "compose.yaml").write_text("services:\n  web:\n    image: nginx:1.25\n  db:\n    image: postgres:16\n")
    (root / "compose.bad.yml").write_text("services: [\n")
    text = gosmall("verify-pins", cwd=root)
    sarif = gosmall("verify-pins", "--format", "sarif", cwd=root)
    assert (text.returncode, sarif.returncode) == (1, 1), sarif.stderr
    log = valid_log(sarif.stdout)
    run = log["runs"][0]
    assert [rule["id"] for rule in run["tool"]["driver"]["rules"]] == list(PROBLEM_HELP)
    shown = []
    for result in run["results"]:
        assert result["level"] == "error"
        physical = result["locations"][0]["physicalLocation"]
        region = physical["region"]
        shown.append(
            f"{unquote(physical['artifactLocation']['uri'])}:{region['startLine']}:{region['startColumn']}: {result['message']['text']}"
        )
    assert shown == text.stdout.splitlines()
    assert [r["ruleId"] for r in run["results"]] == ["invalid-yaml", "not-pinned", "not-pinned", "not-pinned"]
    assert shown[1:] == [
        "compose.yaml:3:12: nginx:1.25: not pinned by digest",
        "compose.yaml:5:12: postgres:16: not pinned by digest",
        "my app/Dockerfile:1:6: alpine:3.19: not pinned by digest",
    ]
    if multitool():
        (tmp_path / "pins.sarif").write_text(sarif.stdout)
        assert multitool_errors(tmp_path / "pins.sarif") == []


def test_verify_pins_sarif_with_nothing_to_report_is_a_valid_empty_run(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM golang:1.22@sha256:" + "0" * 64 + "\n")
    done = gosmall("verify-pins", "--format", "sarif", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert valid_log(done.stdout)["runs"][0]["results"] == []


@pytest.mark.skipif(multitool() is None, reason="SARIF Multitool not installed (optional: the schema check always runs)")
def test_the_multitool_refuses_what_it_should(tmp_path: Path) -> None:
    """The second validator is not a rubber stamp: a region that ends before line 1 is an error to it as to the schema."""
    (tmp_path / "Dockerfile").write_text("FROM alpine:3.19\n")
    log = json.loads(gosmall("verify-pins", "--format", "sarif", cwd=tmp_path).stdout)
    log["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"]["endLine"] = 0
    (tmp_path / "bad.sarif").write_text(json.dumps(log))
    assert schema_validator().is_valid(log) is False
    assert any(error.startswith("SARIF1007: ") for error in multitool_errors(tmp_path / "bad.sarif"))
