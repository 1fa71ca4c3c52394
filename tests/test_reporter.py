"""The reporter shows user data as text, and long stages as a status a person can watch.

RichReporter writes to a StringIO that says it is a terminal; `_screen` replays that output
like a terminal would, so the tests assert what is left on screen, not escape codes.
"""

from __future__ import annotations

import io
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from gosmall.reporter import PlainReporter, RecordingReporter, RichReporter, make_reporter

# Found: a `[/x]` in a container log line raised MarkupError, and bracketed words vanished.
HOSTILE = ["log: [/x] closing tag", "[bold]not bold[/bold]", "[red]", "[link=file:///etc/shadow]x[/link]", "[/]"]
SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"  # rich's "dots"

_CONTROL = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|(.)", re.DOTALL)


@dataclass
class Screen:
    lines: list[str]
    cursor_visible: bool

    def spinners(self) -> list[str]:
        return [line for line in self.lines if line[:1] in SPINNER]


def _screen(raw: str) -> Screen:
    """What a terminal shows after `raw`: text, CR/LF, cursor up, erase line, cursor visibility; colours ignored."""
    rows: list[list[str]] = [[]]
    row = column = 0
    visible = True
    for match in _CONTROL.finditer(raw):
        params, command, char = match.group(1), match.group(2), match.group(3)
        if command is not None:
            n = int(params) if params.isdigit() else 1
            if command == "A":
                row = max(0, row - n)
            elif command == "K" and params == "2":
                rows[row] = []
            elif command == "K":
                del rows[row][column:]
            elif command == "G":
                column = n - 1
            elif command in "hl" and params == "?25":
                visible = command == "h"
            elif command != "m":
                raise AssertionError(f"_screen cannot replay ESC[{params}{command}")
        elif char == "\n":
            row, column = row + 1, 0
        elif char == "\r":
            column = 0
        elif char is not None:
            line = rows[row]
            line.extend(" " * (column + 1 - len(line)))
            line[column] = char
            column += 1
        while len(rows) <= row:
            rows.append([])
    lines = ["".join(r).rstrip() for r in rows]
    while lines and not lines[-1]:
        lines.pop()
    return Screen(lines, visible)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[RichReporter, io.StringIO]]:
    """A RichReporter on an 80x25 terminal whose stdout and stderr are the same screen."""
    for name, value in {"TERM": "xterm-256color", "COLUMNS": "80", "LINES": "25"}.items():
        monkeypatch.setenv(name, value)
    for name in ("TTY_COMPATIBLE", "TTY_INTERACTIVE", "FORCE_COLOR"):
        monkeypatch.delenv(name, raising=False)
    tty = _Tty()
    reporter = RichReporter(stderr=tty, stdout=tty)
    yield reporter, tty
    assert _screen(tty.getvalue()).cursor_visible, "a status was left running"


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


@pytest.mark.parametrize("message", HOSTILE)
def test_rich_status_shows_its_message_as_written_and_is_gone_after(terminal: tuple[RichReporter, io.StringIO], message: str) -> None:
    reporter, tty = terminal
    with reporter.status(message):
        during = _screen(tty.getvalue())
    assert during.spinners() == during.lines and len(during.lines) == 1
    assert during.lines[0][2:] == message
    assert not during.cursor_visible
    assert _screen(tty.getvalue()).lines == []


def test_rich_messages_during_a_status_print_above_the_spinner(terminal: tuple[RichReporter, io.StringIO]) -> None:
    reporter, tty = terminal
    reporter.step("Building hello")
    with reporter.status("linux/amd64: compiling go_app"):
        reporter.detail("go: downloading example.com/x v1.2.3")
        reporter.warn("[bold]cgo[/bold] is on")
        during = _screen(tty.getvalue())
    assert during.lines[:3] == ["==> Building hello", "    go: downloading example.com/x v1.2.3", "WARNING: [bold]cgo[/bold] is on"]
    assert [line[2:] for line in during.lines[3:]] == ["linux/amd64: compiling go_app"]
    assert during.spinners() == during.lines[3:]
    reporter.detail("done")
    assert _screen(tty.getvalue()).lines == [
        "==> Building hello",
        "    go: downloading example.com/x v1.2.3",
        "WARNING: [bold]cgo[/bold] is on",
        "    done",
    ]


def test_rich_table_during_a_status_is_not_drawn_over(terminal: tuple[RichReporter, io.StringIO]) -> None:
    reporter, tty = terminal
    with reporter.status("linux/arm64: compiling go_app"):
        reporter.table("hello", ["platform", "bytes"], [["linux/amd64", "1234"]])
        during = _screen(tty.getvalue())
    assert [line[2:] for line in during.spinners()] == ["linux/arm64: compiling go_app"]
    assert during.lines[-1] == during.spinners()[0]
    table = during.lines[:-1]
    assert table[0].strip() == "hello" and any("linux/amd64" in line and "1234" in line for line in table)
    assert _screen(tty.getvalue()).lines == table


def test_rich_stdout_piped_during_a_status_stays_on_stdout(
    monkeypatch: pytest.MonkeyPatch, terminal: tuple[RichReporter, io.StringIO]
) -> None:
    _, tty = terminal
    piped = io.StringIO()
    monkeypatch.setattr(sys, "stdout", piped)
    reporter = RichReporter(stderr=tty)
    with reporter.status("linux/amd64: compiling go_app"):
        reporter.table("hello", ["platform", "bytes"], [["linux/amd64", "1234"]])
        print('{"digest": "sha256:..."}')  # e.g. a task's JSON answer
    assert "1234" in piped.getvalue() and '{"digest": "sha256:..."}\n' in piped.getvalue()
    assert "1234" not in tty.getvalue() and "digest" not in tty.getvalue()


def test_rich_shows_every_status_active_at_once(terminal: tuple[RichReporter, io.StringIO]) -> None:
    reporter, tty = terminal
    platforms = ["linux/amd64", "linux/arm64", "linux/riscv64"]
    all_started, looked = threading.Barrier(len(platforms) + 1), threading.Barrier(len(platforms) + 1)

    def compile_one(platform: str) -> None:
        with reporter.status(f"{platform}: compiling go_app"):
            all_started.wait(timeout=10)
            looked.wait(timeout=10)

    threads = [threading.Thread(target=compile_one, args=(p,)) for p in platforms]
    for thread in threads:
        thread.start()
    all_started.wait(timeout=10)
    during = _screen(tty.getvalue())
    looked.wait(timeout=10)
    for thread in threads:
        thread.join(timeout=10)
    assert sorted(line[2:] for line in during.lines) == [f"{p}: compiling go_app" for p in platforms]
    assert during.spinners() == during.lines
    assert _screen(tty.getvalue()).lines == []


def test_rich_a_status_that_ends_leaves_the_others(terminal: tuple[RichReporter, io.StringIO]) -> None:
    reporter, tty = terminal
    with reporter.status("linux/amd64: compiling"):
        with reporter.status("linux/arm64: compiling"):
            both = _screen(tty.getvalue())
        one = _screen(tty.getvalue())
    assert [line[2:] for line in both.lines] == ["linux/amd64: compiling", "linux/arm64: compiling"]
    assert [line[2:] for line in one.lines] == ["linux/amd64: compiling"]


def test_rich_status_spins(terminal: tuple[RichReporter, io.StringIO]) -> None:
    reporter, tty = terminal
    frames: set[str] = set()
    with reporter.status("linking"):
        deadline = time.monotonic() + 10
        while len(frames) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
            frames.add(_screen(tty.getvalue()).lines[0][:1])
    assert len(frames) >= 2 and frames <= set(SPINNER)


def test_rich_long_status_stays_on_one_line(terminal: tuple[RichReporter, io.StringIO]) -> None:
    reporter, tty = terminal
    message = "linux/amd64: compiling " + "example.com/a/very/deep/package/" * 5
    with reporter.status(message):
        during = _screen(tty.getvalue())
    assert len(during.lines) == 1 and len(during.lines[0]) == 80
    assert during.lines[0].endswith("…") and message.startswith(during.lines[0][2:-1])


def test_rich_status_ends_when_the_stage_fails(terminal: tuple[RichReporter, io.StringIO]) -> None:
    reporter, tty = terminal
    with pytest.raises(RuntimeError, match="go build failed"):
        with reporter.status("linux/amd64: compiling go_app"):
            raise RuntimeError("go build failed")
    after = _screen(tty.getvalue())
    assert after.lines == [] and after.cursor_visible
    reporter.detail("next")
    assert _screen(tty.getvalue()).lines == ["    next"]


def test_rich_from_many_threads_keeps_lines_whole(terminal: tuple[RichReporter, io.StringIO]) -> None:
    reporter, tty = terminal
    start = threading.Barrier(8)

    def build(n: int) -> None:
        start.wait(timeout=10)
        for i in range(5):
            with reporter.status(f"platform {n}: stage {i}"):
                reporter.detail(f"platform {n}: line {i} " + "x" * 40)

    _in_threads(build, 8)
    expected = sorted(f"    platform {n}: line {i} " + "x" * 40 for n in range(8) for i in range(5))
    assert sorted(_screen(tty.getvalue()).lines) == expected


class _SlowStream(io.StringIO):
    """Writes a character at a time and lets other threads run in between, as a pipe under load might."""

    def write(self, s: str) -> int:
        for char in s:
            super().write(char)
            time.sleep(0)
        return len(s)


def test_plain_status_is_one_plain_line() -> None:
    err = io.StringIO()
    reporter = PlainReporter(stream=err, out=io.StringIO())
    with reporter.status("linux/amd64: compiling [bold]go_app[/]"):
        reporter.detail("go: downloading example.com/x v1.2.3")
    assert err.getvalue() == "    linux/amd64: compiling [bold]go_app[/] ...\n    go: downloading example.com/x v1.2.3\n"


def test_plain_status_ends_when_the_stage_fails() -> None:
    err = io.StringIO()
    reporter = PlainReporter(stream=err, out=io.StringIO())
    with pytest.raises(RuntimeError, match="go build failed"):
        with reporter.status("compiling"):
            raise RuntimeError("go build failed")
    assert err.getvalue() == "    compiling ...\n"


def test_plain_lines_from_many_threads_never_interleave() -> None:
    err, out = _SlowStream(), _SlowStream()
    reporter = PlainReporter(stream=err, out=out)
    start = threading.Barrier(6)

    def build(n: int) -> None:
        start.wait(timeout=10)
        reporter.table(f"table {n}", ["platform", "bytes"], [[f"p{n}", "1"]])
        for i in range(4):
            with reporter.status(f"platform {n}: stage {i}"):
                reporter.detail(f"platform {n}: detail {i}")
                reporter.warn(f"platform {n}: warn {i}")

    _in_threads(build, 6)
    expected = [
        line
        for n in range(6)
        for i in range(4)
        for line in (f"    platform {n}: stage {i} ...", f"    platform {n}: detail {i}", f"WARNING: platform {n}: warn {i}")
    ]
    assert sorted(err.getvalue().splitlines()) == sorted(expected)
    alone = io.StringIO()
    for n in range(6):
        PlainReporter(stream=io.StringIO(), out=alone).table(f"table {n}", ["platform", "bytes"], [[f"p{n}", "1"]])
    tables = [f"table {t}" for t in out.getvalue().split("table ")[1:]]
    assert sorted(tables) == [f"table {t}" for t in alone.getvalue().split("table ")[1:]]


def test_recording_keeps_statuses_and_lets_failures_through() -> None:
    reporter = RecordingReporter()
    with reporter.status("linux/amd64: compiling go_app"):
        reporter.detail("inside")
    with pytest.raises(RuntimeError):
        with reporter.status("linux/arm64: compiling go_app"):
            raise RuntimeError("go build failed")
    assert reporter.events == [
        ("status", "linux/amd64: compiling go_app"),
        ("detail", "inside"),
        ("status", "linux/arm64: compiling go_app"),
    ]
    assert reporter.messages("status") == ["linux/amd64: compiling go_app", "linux/arm64: compiling go_app"]


class _SlowRows(list[list[str]]):
    """Rows that let other threads run between two of them."""

    def __iter__(self) -> Iterator[list[str]]:
        for row in super().__iter__():
            time.sleep(0)
            yield row


def test_recording_keeps_a_table_together_across_threads() -> None:
    reporter = RecordingReporter()
    start = threading.Barrier(4)
    rows = _SlowRows([f"row {i}"] for i in range(50))

    def report(n: int) -> None:
        start.wait(timeout=10)
        reporter.table(f"table {n}", ["name"], rows)
        reporter.step(f"step {n}")

    _in_threads(report, 4)
    for n in range(4):
        at = reporter.events.index(("table", f"table {n}"))
        assert reporter.events[at + 1 : at + 51] == [("row", f"row {i}") for i in range(50)]


@pytest.mark.parametrize(
    ("tty", "environ", "kind"),
    [
        (True, {}, RichReporter),
        (True, {"CI": "true"}, PlainReporter),
        (True, {"NO_COLOR": "1"}, PlainReporter),
        (False, {}, PlainReporter),
    ],
)
def test_make_reporter_is_rich_only_on_a_terminal_outside_ci(
    monkeypatch: pytest.MonkeyPatch, tty: bool, environ: dict[str, str], kind: type
) -> None:
    for name in ("CI", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "stderr", _Tty() if tty else io.StringIO())
    assert type(make_reporter()) is kind


def _in_threads(target: Callable[[int], None], count: int) -> None:
    """target(0) … target(count - 1), each in its own thread, all joined."""
    threads = [threading.Thread(target=target, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)


def test_rich_status_update_is_shown_and_its_last_word_is_drawn_before_it_goes(terminal: tuple[RichReporter, io.StringIO]) -> None:
    reporter, tty = terminal
    with reporter.status("hello: go build") as line:
        assert line.watched
        line.update("hello: go build: 3/197 packages")
        deadline = time.monotonic() + 10
        while "3/197" not in "".join(_screen(tty.getvalue()).lines) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [s[2:] for s in _screen(tty.getvalue()).spinners()] == ["hello: go build: 3/197 packages"]
        line.update("hello: go build: 197/197 packages")  # and the build ends at once, before the next tick
    assert "197/197 packages" in tty.getvalue()
    assert _screen(tty.getvalue()).lines == []


def test_a_log_status_is_not_watched_and_its_updates_say_nothing() -> None:
    err = io.StringIO()
    plain = PlainReporter(stream=err)
    with plain.status("hello: go build") as line:
        assert not line.watched
        line.update("hello: go build: 3/197 packages")
    assert err.getvalue() == "    hello: go build ...\n"
    recording = RecordingReporter()
    with recording.status("x") as line:
        line.update("y")
    assert recording.events == [("status", "x")]
    watching = RecordingReporter(watching=True)
    with watching.status("x") as line:
        line.update("y")
    assert watching.events == [("status", "x"), ("update", "y")]
