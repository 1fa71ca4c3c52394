"""The reporter shows user data as text: a container log or a path is never read as rich markup."""

from __future__ import annotations

import io

import pytest

from gosmall.reporter import PlainReporter, RichReporter

# Found: a `[/x]` in a container log line raised MarkupError, and bracketed words vanished.
HOSTILE = ["log: [/x] closing tag", "[bold]not bold[/bold]", "[red]", "[link=file:///etc/shadow]x[/link]", "[/]"]


@pytest.mark.parametrize("message", HOSTILE)
def test_rich_shows_brackets_as_written(message: str) -> None:
    err, out = io.StringIO(), io.StringIO()
    reporter = RichReporter(stderr=err, stdout=out)
    reporter.step(message)
    reporter.detail(message)
    reporter.warn(message)
    reporter.table(message, ["platform", "bytes"], [[message, "1"]])
    assert err.getvalue().count(message) == 3
    assert out.getvalue().count(message) == 2  # title and cell


def test_plain_is_plain() -> None:
    err, out = io.StringIO(), io.StringIO()
    PlainReporter(stream=err, out=out).detail("[/x]")
    assert err.getvalue() == "    [/x]\n"
