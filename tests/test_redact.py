"""The one function that makes a server's text safe to show."""

from __future__ import annotations

import pytest

from gosmall.redact import LIMIT, REDACTED, printable, redact

SECRET = "tok-SECRET-1234"


@pytest.mark.parametrize(
    "text",
    [
        f"GET /v2/ HTTP/1.1\r\nHost: r\r\nAuthorization: Bearer {SECRET}\r\n",  # an echoed request
        f"authorization: {SECRET}",  # a header without its scheme
        f'{{"errors":[{{"detail":{{"Authorization":["Bearer {SECRET}"]}}}}]}}',  # Go's JSON of http.Header
        f"map[Accept:[*/*] Authorization:[{SECRET}]]",  # Go's %v of http.Header
        f"{{'Authorization': '{SECRET}'}}",  # a Python repr
        f'{{"token": "{SECRET}", "expires_in": 60}}',
        f'{{"access_token":"{SECRET}"}}',
        f'{{"refresh_token" : "a\\"{SECRET}"}}',  # an escaped quote inside the value
        f'{{"auth": "{SECRET}"}}',  # a Docker config entry
        f'{{"password":"{SECRET}"}}',
        f"grant_type=password&username=al&password={SECRET}&scope=x",  # a form body
        f"https://ghcr.io/token?service=x&access_token={SECRET}",
        f"https://bucket.s3/blob?X-Amz-Credential=AKIA/x&X-Amz-Signature={SECRET}",
        f"https://alice:{SECRET}@registry.example.com/v2/",
        f"Basic {SECRET}",
        f"Cookie: session={SECRET}",
    ],
)
def test_credentials_are_redacted(text: str) -> None:
    shown = redact(text)
    assert SECRET not in shown and SECRET[4:] not in shown
    assert REDACTED in shown


def test_what_is_not_a_credential_is_kept() -> None:
    body = '{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"9"}}]}'
    assert redact(body) == body
    assert redact("unauthorized: authentication required") == "unauthorized: authentication required"


def test_one_line_cut_short_and_no_terminal_controls() -> None:
    shown = redact("line one\nline two\r\n\tend")
    assert shown == "line one line two end"
    long = redact("x" * 10_000)
    assert len(long) == LIMIT and long.endswith("…")
    assert redact("\x1b[2J\x1b]0;owned\x07ok") == "\\x1b[2J\\x1b]0;owned\\x07ok"
    assert printable("a\x1bb\tc\nd") == "a\\x1bb\tc\nd"  # tabs and line ends are the caller's


def test_redaction_comes_before_the_cut() -> None:
    # A token straddling the cut must not leave its first half behind.
    text = "x" * (LIMIT - 20) + f" Bearer {SECRET}{SECRET}{SECRET}"
    shown = redact(text)
    assert "tok-" not in shown and len(shown) <= LIMIT
