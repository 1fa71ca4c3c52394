"""Every record of distribution/reference's own test tables, against our port.

The vectors live in ../shared/vectors (see its README); each record is one
test case here, and a record whose API this file does not know fails rather
than being skipped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gosmall import reference as r
from gosmall.reference import Reference, ReferenceError

VECTORS = Path(__file__).resolve().parent / "vectors" / "reference_cases.json"
CASES: list[dict[str, Any]] = json.loads(VECTORS.read_text(encoding="utf-8")) if VECTORS.is_file() else []

PARSERS = {
    "Parse": r.parse,
    "Field.UnmarshalText": r.parse,
    "WithName": r.with_name,
    "ParseNamed": r.parse_named,
    "ParseNormalizedNamed": r.parse_normalized_named,
    "ParseAnyReference": r.parse_any_reference,
    "ParseDockerRef": r.parse_docker_ref,
}
REGEXPS = {
    "regexp:^domainAndPort$": r.DOMAIN_AND_PORT_RE,
    "regexp:anchoredNameRegexp": r.ANCHORED_NAME_RE,
    "regexp:referenceRegexp": r.REFERENCE_RE,
    "regexp:anchoredIdentifierRegexp": r.ANCHORED_IDENTIFIER_RE,
}
FIELDS = {
    "name": lambda ref: ref.name,
    "domain": lambda ref: ref.domain,
    "path": lambda ref: ref.path,
    "tag": lambda ref: ref.tag,
    "digest": lambda ref: ref.digest,
    "normalized": str,
    "familiar": lambda ref: ref.familiar_name,
    "familiar_string": lambda ref: ref.familiar_string,
    # Flags rather than values: the record holds the expectation elsewhere.
    "reference_type": lambda ref: "digest-only" if not ref.is_named else "named",
    "is_tagged": lambda ref: ref.tag is not None,
    "is_canonical": lambda ref: ref.digest is not None,
}
FLAG_EXPECTATIONS = {"is_tagged": True, "is_canonical": True}


def _case_id(case: dict[str, Any]) -> str:
    return f"{case['test']}:{case['input'][:60]}"


def test_vectors_are_all_there() -> None:
    assert VECTORS.is_file(), f"the reference vectors are missing at {VECTORS}"
    assert len(CASES) == 337
    apis = {c["api"] for c in CASES}
    known = set(PARSERS) | set(REGEXPS) | {"WithTag", "WithDigest", "FamiliarMatch"}
    assert apis <= known, f"records with an API this test does not check: {apis - known}"


def _expected_fields(case: dict[str, Any]) -> dict[str, Any]:
    # `asserted` says which fields the Go test compares (a null there means
    # "absent"); without it only the stated (non-null) values are expected.
    if "asserted" in case:
        return {key: case[key] if key in case else FLAG_EXPECTATIONS[key] for key in case["asserted"]}
    keys = ("name", "domain", "path", "tag", "digest", "normalized", "familiar", "familiar_string")
    return {key: case[key] for key in keys if case.get(key) is not None}


@pytest.mark.parametrize("case", [c for c in CASES if c["category"] == "parse"], ids=_case_id)
def test_parse(case: dict[str, Any]) -> None:
    parser = PARSERS[case["api"]]
    text = case["input"]
    assert text is not None, "a parse record without an input cannot be checked"
    if not case["valid"]:
        with pytest.raises(ReferenceError) as caught:
            parser(text)
        if case["error"] is not None:
            assert caught.value.kind == case["error"]
            assert caught.value.reason == case["error_message"]
        assert text in str(caught.value) or caught.value.text == text
        return
    ref = parser(text)
    for key, expected in _expected_fields(case).items():
        assert FIELDS[key](ref) == expected, key
    if case["api"] in ("ParseAnyReference", "ParseDockerRef") and ref.is_named:
        # The Go tests also require the result to equal Parse(normalized).
        assert r.parse(case["normalized"]) == ref


@pytest.mark.parametrize("case", [c for c in CASES if c["category"] == "regexp"], ids=_case_id)
def test_regexp(case: dict[str, Any]) -> None:
    match = REGEXPS[case["api"]].fullmatch(case["input"])
    assert (match is not None) == case["valid"]
    if match is not None and "subs" in case:
        assert [g or "" for g in match.groups()] == case["subs"]


@pytest.mark.parametrize("case", [c for c in CASES if c["category"] == "compose"], ids=_case_id)
def test_compose(case: dict[str, Any]) -> None:
    def compose() -> Reference:
        # Invalid cases start from ParseNormalizedNamed, valid ones from
        # WithName, as in the Go tests; the note says in which order the
        # tag and digest are applied.
        base = r.with_name(case["input"]) if case["valid"] else r.parse_normalized_named(case["input"])
        tag, digest = case["tag"], case["digest"]
        if case["api"] == "WithTag":
            if digest is not None:
                base = r.with_digest(base, digest)
            return r.with_tag(base, tag)
        if tag is not None:
            base = r.with_tag(base, tag)
        return r.with_digest(base, digest)

    if not case["valid"]:
        with pytest.raises(ReferenceError):
            compose()
        return
    assert str(compose()) == case["normalized"]


@pytest.mark.parametrize("case", [c for c in CASES if c["category"] == "match"], ids=_case_id)
def test_familiar_match(case: dict[str, Any]) -> None:
    ref = r.parse_any_reference(case["input"])
    if not case["valid"]:
        with pytest.raises(ReferenceError) as caught:
            r.familiar_match(case["pattern"], ref)
        assert caught.value.kind == "path.ErrBadPattern"
        return
    assert r.familiar_match(case["pattern"], ref) is case["match"]


def test_every_record_is_checked_by_one_test() -> None:
    by_category = {c["category"] for c in CASES}
    assert by_category == {"parse", "regexp", "compose", "match"}


def test_pinned_means_a_valid_sha256_digest() -> None:
    hex64 = "a" * 64
    assert r.parse_normalized_named(f"alpine:3.20@sha256:{hex64}").is_pinned
    assert not r.parse_normalized_named("alpine:3.20").is_pinned
    assert r.parse_normalized_named("alpine").familiar_string == "alpine"


def test_error_message_names_the_reference_and_the_fix() -> None:
    with pytest.raises(ReferenceError) as caught:
        r.parse_normalized_named("Alpine:3")
    assert "'Alpine:3' is not a valid image reference" in str(caught.value)
    assert "lowercase" in str(caught.value)
