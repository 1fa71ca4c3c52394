"""Container image references, parsed exactly as distribution/reference does.

Docker, containerd, skopeo and every registry client agree on what
`alpine`, `ghcr.io/org/app:1.2` or `repo@sha256:…` mean because they share
one grammar: the Go package `github.com/distribution/reference` (v0.6.0 and
later). This module is a port of it, not a lookalike, so `verify-pins` and
`pin` read a reference the way the engine that pulls it will:

- `parse` is Go's `Parse`: strict, no Docker Hub defaults.
- `parse_normalized_named` is `ParseNormalizedNamed`: familiar names become
  full ones (`alpine` → `docker.io/library/alpine`).
- `parse_docker_ref`, `parse_any_reference`, `parse_named`, `with_name`,
  `with_tag`, `with_digest` and `familiar_match` are their Go namesakes.

Every rejection is a `ReferenceError` whose `kind` is the Go error identifier
(`ErrNameEmpty`, `digest.ErrDigestInvalidLength`, …) and whose `reason` is
the Go error text, so the test vectors transcribed from the Go tests can be
checked one to one.

Digests are validated as go-digest v1.0.0 does with only sha256 linked in,
which is what the Go tests (and `stages.digest.Digest`) expect: `sha512:…`
is "unsupported". There is no well-kept Python package that implements this
grammar, hence our own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import GosmallError

NAME_TOTAL_LENGTH_MAX = 255
DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"

# -- the grammar, spelled like regexp.go so the two can be compared line by line

_ALPHANUMERIC = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_DOMAIN_NAME_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_OPTIONAL_PORT = r"(?::[0-9]+)?"
# Go's \w is ASCII only; re.ASCII below keeps Python's the same.
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9a-fA-F]{32,}"
_IPV6_ADDRESS = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN_NAME = _DOMAIN_NAME_COMPONENT + r"(?:\." + _DOMAIN_NAME_COMPONENT + r")*"
_HOST = r"(?:" + _DOMAIN_NAME + r"|" + _IPV6_ADDRESS + r")"
DOMAIN_AND_PORT = _HOST + _OPTIONAL_PORT
_PATH_COMPONENT = _ALPHANUMERIC + r"(?:" + _SEPARATOR + _ALPHANUMERIC + r")*"
_REMOTE_NAME = _PATH_COMPONENT + r"(?:/" + _PATH_COMPONENT + r")*"
_NAME = r"(?:" + DOMAIN_AND_PORT + r"/)?" + _REMOTE_NAME
_IDENTIFIER = r"([a-f0-9]{64})"

# Anchored patterns are used with fullmatch: Python's `$` would also accept a
# trailing newline, Go's does not.
DOMAIN_AND_PORT_RE = re.compile(DOMAIN_AND_PORT, re.ASCII)
ANCHORED_TAG_RE = re.compile(_TAG, re.ASCII)
ANCHORED_DIGEST_RE = re.compile(_DIGEST, re.ASCII)
ANCHORED_NAME_RE = re.compile(r"(?:(" + DOMAIN_AND_PORT + r")/)?(" + _REMOTE_NAME + r")", re.ASCII)
REFERENCE_RE = re.compile(r"(" + _NAME + r")(?::(" + _TAG + r"))?(?:@(" + _DIGEST + r"))?", re.ASCII)
ANCHORED_IDENTIFIER_RE = re.compile(_IDENTIFIER, re.ASCII)

# go-digest v1.0.0: the encoded part of each available algorithm.
_DIGEST_ENCODED = {"sha256": re.compile(r"[a-f0-9]{64}")}

# Go error identifiers and texts (reference.go, go-digest digest.go).
_GO_ERRORS = {
    "ErrReferenceInvalidFormat": "invalid reference format",
    "ErrTagInvalidFormat": "invalid tag format",
    "ErrDigestInvalidFormat": "invalid digest format",
    "ErrNameContainsUppercase": "repository name must be lowercase",
    "ErrNameEmpty": "repository name must have at least one component",
    "ErrNameTooLong": f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters",
    "ErrNameNotCanonical": "repository name must be canonical",
    "digest.ErrDigestInvalidFormat": "invalid checksum digest format",
    "digest.ErrDigestInvalidLength": "invalid checksum digest length",
    "digest.ErrDigestUnsupported": "unsupported digest algorithm",
    "path.ErrBadPattern": "syntax error in pattern",
}


class ReferenceError(GosmallError):
    """An image reference that the grammar rejects.

    `kind` is the Go error identifier (or "" for Go's ad-hoc fmt.Errorf
    errors), `reason` the Go text, `text` the input.
    """

    def __init__(self, text: str, kind: str, reason: str | None = None) -> None:
        self.text = text
        self.kind = kind
        self.reason = reason if reason is not None else _GO_ERRORS[kind]
        super().__init__(
            f"'{text}' is not a valid image reference: {self.reason}. "
            "A reference is [registry[:port]/]path[:tag][@sha256:<64 hex>] with a lowercase path, "
            "e.g. 'docker.io/library/alpine:3.20@sha256:…'."
        )


@dataclass(frozen=True)
class Reference:
    """A parsed reference. `domain`/`path` are "" when absent; tag/digest None.

    A digest-only reference (from `parse_any_reference`) has no name.
    """

    domain: str = ""
    path: str = ""
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        return f"{self.domain}/{self.path}" if self.domain else self.path

    @property
    def is_named(self) -> bool:
        return bool(self.name)

    @property
    def is_pinned(self) -> bool:
        """Carries a digest that go-digest accepts (sha256 + 64 hex)."""
        return self.digest is not None and _digest_error(self.digest) is None

    def __str__(self) -> str:
        out = self.name
        if self.tag is not None:
            out += f":{self.tag}"
        if self.digest is not None:
            out += f"@{self.digest}" if out else self.digest
        return out

    @property
    def familiar_name(self) -> str:
        """The short name Docker shows (`docker.io/library/alpine` → `alpine`)."""
        domain, path = self.domain, self.path
        if domain == DEFAULT_DOMAIN:
            domain = ""
            # Only one level under library/ is an official image; nested
            # paths keep the prefix, as in familiarizeName.
            if path.startswith(OFFICIAL_REPO_PREFIX) and "/" not in path[len(OFFICIAL_REPO_PREFIX) :]:
                path = path[len(OFFICIAL_REPO_PREFIX) :]
        return f"{domain}/{path}" if domain else path

    @property
    def familiar_string(self) -> str:
        if not self.is_named:
            return str(self)
        out = self.familiar_name
        if self.tag is not None:
            out += f":{self.tag}"
        if self.digest is not None:
            out += f"@{self.digest}"
        return out


def _digest_error(text: str) -> str | None:
    """go-digest v1.0.0 `Digest.Validate`: the error identifier, or None."""
    i = text.find(":")
    if i <= 0 or i + 1 == len(text):
        return "digest.ErrDigestInvalidFormat"
    algorithm, encoded = text[:i], text[i + 1 :]
    pattern = _DIGEST_ENCODED.get(algorithm)
    if pattern is None:
        if not re.fullmatch(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+", text):
            return "digest.ErrDigestInvalidFormat"
        return "digest.ErrDigestUnsupported"
    if len(encoded) != 64:
        return "digest.ErrDigestInvalidLength"
    return None if pattern.fullmatch(encoded) else "digest.ErrDigestInvalidFormat"


def _best(domain: str, path: str, tag: str | None, digest: str | None, text: str) -> Reference:
    ref = Reference(domain, path, tag, digest)
    if not ref.name and digest is None:
        raise ReferenceError(text, "ErrNameEmpty")
    return ref


def parse(text: str) -> Reference:
    """Go's `Parse`: the strict grammar, no Docker Hub defaults."""
    match = REFERENCE_RE.fullmatch(text)
    if match is None:
        if text == "":
            raise ReferenceError(text, "ErrNameEmpty")
        if REFERENCE_RE.fullmatch(text.lower()) is not None:
            raise ReferenceError(text, "ErrNameContainsUppercase")
        raise ReferenceError(text, "ErrReferenceInvalidFormat")
    name_match = ANCHORED_NAME_RE.fullmatch(match.group(1))
    assert name_match is not None  # the name group is the same grammar
    domain, path = name_match.group(1) or "", name_match.group(2)
    if len(path) > NAME_TOTAL_LENGTH_MAX:
        raise ReferenceError(text, "ErrNameTooLong")
    digest = match.group(3)
    if digest is not None:
        error = _digest_error(digest)
        if error is not None:
            raise ReferenceError(text, error)
    return _best(domain, path, match.group(2), digest, text)


def _split_docker_domain(name: str) -> tuple[str, str]:
    maybe_domain, sep, maybe_remote = name.partition("/")
    if not sep:
        # A single element ("ubuntu", "ubuntu:latest") is a familiar name,
        # never "host:port".
        return DEFAULT_DOMAIN, OFFICIAL_REPO_PREFIX + name
    if maybe_domain == "localhost":
        domain, remote = maybe_domain, maybe_remote
    elif maybe_domain == LEGACY_DEFAULT_DOMAIN:
        domain, remote = DEFAULT_DOMAIN, maybe_remote
    elif any(c in maybe_domain for c in ".:"):
        domain, remote = maybe_domain, maybe_remote
    elif maybe_domain.lower() != maybe_domain:
        # Docker Hub namespaces are lowercase, so an uppercase first
        # component can only be a host.
        domain, remote = maybe_domain, maybe_remote
    else:
        domain, remote = DEFAULT_DOMAIN, name
    if domain == DEFAULT_DOMAIN and "/" not in remote:
        remote = OFFICIAL_REPO_PREFIX + remote
    return domain, remote


def parse_normalized_named(text: str) -> Reference:
    """Go's `ParseNormalizedNamed`: Docker's reading of what a user typed."""
    if ANCHORED_IDENTIFIER_RE.fullmatch(text):
        raise ReferenceError(text, "", f"invalid repository name ({text}), cannot specify 64-byte hexadecimal strings")
    domain, remainder = _split_docker_domain(text)
    remote = remainder.split(":", 1)[0]
    if remote.lower() != remote:
        raise ReferenceError(text, "", f"invalid reference format: repository name ({remote}) must be lowercase")
    ref = parse(f"{domain}/{remainder}")
    if not ref.is_named:  # pragma: no cover - a domain is always there
        raise ReferenceError(text, "", f"reference {ref} has no name")
    return ref


def parse_named(text: str) -> Reference:
    """Go's `ParseNamed`: only a full, canonical name is accepted."""
    ref = parse_normalized_named(text)
    if str(ref) != text:
        raise ReferenceError(text, "ErrNameNotCanonical")
    return ref


def parse_any_reference(text: str) -> Reference:
    """Go's `ParseAnyReference`: a bare image ID or digest, else a named reference."""
    if ANCHORED_IDENTIFIER_RE.fullmatch(text):
        return Reference(digest=f"sha256:{text}")
    if _digest_error(text) is None:
        return Reference(digest=text)
    return parse_normalized_named(text)


def parse_docker_ref(text: str) -> Reference:
    """Go's `ParseDockerRef`: normalised, `latest` if untagged, digest wins over tag."""
    ref = parse_normalized_named(text)
    if ref.digest is not None:
        return Reference(ref.domain, ref.path, None, ref.digest)
    if ref.tag is None:
        return Reference(ref.domain, ref.path, DEFAULT_TAG, None)
    return ref


def with_name(name: str) -> Reference:
    """Go's `WithName`: a repository name alone, no tag or digest."""
    match = ANCHORED_NAME_RE.fullmatch(name)
    if match is None:
        raise ReferenceError(name, "ErrReferenceInvalidFormat")
    if len(match.group(2)) > NAME_TOTAL_LENGTH_MAX:
        raise ReferenceError(name, "ErrNameTooLong")
    return Reference(match.group(1) or "", match.group(2))


def with_tag(ref: Reference, tag: str) -> Reference:
    """Go's `WithTag`: keeps the name and any digest."""
    if not ANCHORED_TAG_RE.fullmatch(tag):
        raise ReferenceError(tag, "ErrTagInvalidFormat")
    return Reference(ref.domain, ref.path, tag, ref.digest)


def with_digest(ref: Reference, digest: str) -> Reference:
    """Go's `WithDigest`: only the generic digest shape is checked, as in Go."""
    if not ANCHORED_DIGEST_RE.fullmatch(digest):
        raise ReferenceError(digest, "ErrDigestInvalidFormat")
    return Reference(ref.domain, ref.path, ref.tag, digest)


def familiar_match(pattern: str, ref: Reference) -> bool:
    """Go's `FamiliarMatch`: path.Match on the familiar string, then the familiar name."""
    matched = _path_match(pattern, ref.familiar_string)
    if ref.is_named and not matched:
        matched = _path_match(pattern, ref.familiar_name)
    return matched


# -- Go's path.Match, which fnmatch does not reproduce (`*` stops at `/`,
#    and a malformed pattern is an error, not a literal)


class _BadPattern(Exception):
    pass


def _path_match(pattern: str, name: str) -> bool:
    try:
        return _go_match(pattern, name)
    except _BadPattern:
        raise ReferenceError(pattern, "path.ErrBadPattern") from None


def _go_match(pattern: str, name: str) -> bool:
    while pattern:
        star, chunk, pattern = _scan_chunk(pattern)
        if star and not chunk:
            return "/" not in name
        t, ok = _match_chunk(chunk, name)
        if ok and (not t or pattern):
            name = t
            continue
        rest = _match_after_star(chunk, pattern, name) if star else None
        if rest is not None:
            name = rest
            continue
        # Go checks the rest of the pattern is well formed before failing.
        while pattern:
            _, chunk, pattern = _scan_chunk(pattern)
            _match_chunk(chunk, "")
        return False
    return not name


def _match_after_star(chunk: str, pattern: str, name: str) -> str | None:
    """What is left of `name` once a star and `chunk` matched, or None."""
    for i in range(len(name)):
        if name[i] == "/":  # a star never crosses a slash
            return None
        t, ok = _match_chunk(chunk, name[i + 1 :])
        if ok and not (not pattern and t):
            return t
    return None


def _scan_chunk(pattern: str) -> tuple[bool, str, str]:
    star = False
    while pattern.startswith("*"):
        pattern, star = pattern[1:], True
    in_range = False
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 1
        elif c == "[":
            in_range = True
        elif c == "]":
            in_range = False
        elif c == "*" and not in_range:
            break
        i += 1
    return star, pattern[:i], pattern[i:]


def _match_chunk(chunk: str, s: str) -> tuple[str, bool]:
    failed = False
    while chunk:
        if not failed and not s:
            failed = True
        c = chunk[0]
        if c == "[":
            r = ""
            if not failed:
                r, s = s[0], s[1:]
            chunk = chunk[1:]
            negated = chunk.startswith("^")
            if negated:
                chunk = chunk[1:]
            match, nrange = False, 0
            while True:
                if chunk and chunk[0] == "]" and nrange > 0:
                    chunk = chunk[1:]
                    break
                lo, chunk = _get_esc(chunk)
                hi = lo
                if chunk.startswith("-"):
                    hi, chunk = _get_esc(chunk[1:])
                if lo <= r <= hi and r != "":
                    match = True
                nrange += 1
            if match == negated:
                failed = True
        elif c == "?":
            if not failed:
                if s[0] == "/":
                    failed = True
                s = s[1:]
            chunk = chunk[1:]
        elif c == "\\":
            chunk = chunk[1:]
            if not chunk:
                raise _BadPattern
            if not failed:
                if chunk[0] != s[0]:
                    failed = True
                s = s[1:]
            chunk = chunk[1:]
        else:
            if not failed:
                if c != s[0]:
                    failed = True
                s = s[1:]
            chunk = chunk[1:]
    return (s, False) if failed else (s, True)


def _get_esc(chunk: str) -> tuple[str, str]:
    if not chunk or chunk[0] in "-]":
        raise _BadPattern
    if chunk[0] == "\\":
        chunk = chunk[1:]
        if not chunk:
            raise _BadPattern
    r, chunk = chunk[0], chunk[1:]
    if not chunk:
        raise _BadPattern
    return r, chunk
