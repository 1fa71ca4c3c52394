"""SARIF 2.1.0, the one writer for every check that finds something (`audit`, `verify-pins`).

One log, one run: `tool.driver` is gosmall with its version and every rule the
check has (id, short description, help text, default level), and each finding
is one result with its `ruleId`, `level` and a location. GitHub's code scanning
(`github/codeql-action/upload-sarif`) rejects a whole file when a result has no
physical location or its URI has a scheme it does not know, so every result has
a repository-relative `artifactLocation.uri` (a file outside the working
directory is a `file://` URI) and a region (line 1 when the finding is about the
whole file); what a finding is about inside an image is its logical location.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from .. import __version__

Level = Literal["error", "warning", "note"]

SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
VERSION = "2.1.0"


@dataclass(frozen=True)
class SarifRule:
    id: str
    level: Level  # defaultConfiguration.level
    short: str  # shortDescription
    help: str  # help.text
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LogicalLocation:
    name: str
    fully_qualified_name: str
    kind: str  # one of SARIF's kinds: "resource", "variable", "object", ...


@dataclass(frozen=True)
class SarifResult:
    rule: str
    level: Level
    message: str
    uri: str  # artifactLocation.uri: relative to the working directory, or a file:// URI
    line: int = 1  # 1-based; 1 when the finding is about the whole file (code scanning wants a region on every result)
    column: int | None = None
    logical: LogicalLocation | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)


def artifact_uri(path: str) -> str:
    """A URI for `path` as a result's artifactLocation: relative stays relative (percent-encoded), absolute becomes file://."""
    if path.startswith("/"):
        return Path(path).as_uri()
    # ':' would read as a scheme in the first segment, '@' and '#' as URI syntax: encode all but '/'.
    return quote(path, safe="/")


def sarif_log(rules: Sequence[SarifRule], results: Sequence[SarifResult]) -> dict[str, Any]:
    index = {rule.id: i for i, rule in enumerate(rules)}
    driver: dict[str, Any] = {
        "name": "gosmall",
        "version": __version__,
        "semanticVersion": __version__,
        "rules": [_rule(rule) for rule in rules],
    }
    run = {"tool": {"driver": driver}, "columnKind": "unicodeCodePoints", "results": [_result(r, index[r.rule]) for r in results]}
    return {"$schema": SCHEMA, "version": VERSION, "runs": [run]}


def format_sarif(rules: Sequence[SarifRule], results: Sequence[SarifResult]) -> str:
    return json.dumps(sarif_log(rules, results), indent=2, ensure_ascii=False)


def _rule(rule: SarifRule) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": rule.id,
        "shortDescription": {"text": rule.short},
        "fullDescription": {"text": rule.short},
        "help": {"text": rule.help},
        "defaultConfiguration": {"level": rule.level},
    }
    if rule.properties:
        out["properties"] = dict(rule.properties)
    return out


def _result(result: SarifResult, rule_index: int) -> dict[str, Any]:
    region: dict[str, Any] = {"startLine": result.line}
    if result.column is not None:
        region["startColumn"] = result.column
    location: dict[str, Any] = {"physicalLocation": {"artifactLocation": {"uri": result.uri}, "region": region}}
    if result.logical is not None:
        logical = result.logical
        location["logicalLocations"] = [{"name": logical.name, "fullyQualifiedName": logical.fully_qualified_name, "kind": logical.kind}]
    out: dict[str, Any] = {
        "ruleId": result.rule,
        "ruleIndex": rule_index,
        "level": result.level,
        "message": {"text": result.message},
        "locations": [location],
    }
    if result.properties:
        out["properties"] = dict(result.properties)
    return out
