"""Text a server (or a file) wrote, made safe to show: credentials redacted, controls escaped, cut short.

A registry's error body may echo the request it got, `Authorization: Bearer …`
included, and a token endpoint may answer with the token it refuses. gosmall
shows such text so the user can see what the server said; `redact` is the one
function every message passes it through, so no code path shows a credential.

What counts as credential-looking, case-insensitively:

- the value of an `Authorization`, `Proxy-Authorization`, `X-Registry-Auth`,
  `Cookie` or `Set-Cookie` header, to the end of its line;
- the word after `Bearer` or `Basic`;
- the value of a JSON, Python-repr, Go-map or form/query field whose name
  ends in `token`, `secret`, `password`, `passwd`, `auth`, `authorization`,
  `signature`, `credential` or `cookie` (`"access_token": "…"`,
  `map[Authorization:[…]]`, `password=…`, `X-Amz-Signature=…`);
- the password in a URL's `user:password@`.

Redacting first and cutting second means a cut never leaves half a token.
Over-redacting a word such as "Basic authentication" is the price of never
showing a real one.
"""

from __future__ import annotations

import re

REDACTED = "[redacted]"
LIMIT = 300  # characters: enough to see what a server said, too few to flood a terminal

_KEY = r"[\w.-]*?(?:token|secret|password|passwd|auth|authorization|signature|credential|cookie)"
_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    # Header lines first, while the line structure is still there.
    (
        re.compile(r"(?im)^([ \t]*(?:proxy-authorization|authorization|x-registry-auth|cookie|set-cookie)[ \t]*:[ \t]*).+$"),
        rf"\1{REDACTED}",
    ),
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[^\s\"',;\]]+"), rf"\1\2{REDACTED}"),
    # An Authorization header echoed inside a line without its scheme.
    (re.compile(r"(?i)(\b(?:proxy-)?authorization\s*:\s*)(?!bearer\b|basic\b|\[)[^\s\"',;]+"), rf"\1{REDACTED}"),
    # JSON or a Python repr: "access_token": "…", 'Authorization': ['…'].
    (re.compile(rf"""(?i)(["']{_KEY}["']\s*:\s*\[?\s*)(["'])(?:\\.|(?!\2).)*\2"""), rf"\1\2{REDACTED}\2"),
    # Go's %v of an http.Header: map[Authorization:[…]].
    (re.compile(rf"(?i)(\b{_KEY}:\[)[^\]]*"), rf"\1{REDACTED}"),
    # Form and query fields: password=…, X-Amz-Signature=….
    (re.compile(rf"(?i)(\b{_KEY}=)[^&\s\"',;]+"), rf"\1{REDACTED}"),
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]+):[^@\s/]+@"), rf"\1:{REDACTED}@"),
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def redact(text: str, *, limit: int = LIMIT) -> str:
    """`text` on one line, credential-looking values replaced, control characters escaped, at most `limit` characters."""
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    one_line = " ".join(text.split())
    shown = printable(one_line)
    return shown if len(shown) <= limit else shown[: limit - 1].rstrip() + "…"


def printable(text: str) -> str:
    """`text` with control characters (ESC, CR, NUL, …) written as \\xNN, so none can move the cursor or recolour a terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
