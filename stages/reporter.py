"""How stages talk to the person running them.

Stages never print. They take a `Reporter` made by the task: rich on a
terminal, plain lines in CI or a pipe, and a recording one in tests.

A long stage runs inside `with reporter.status("linux/amd64: compiling go_app") as line:`.
Platforms build in parallel threads, so every method may be called from several
threads at once, and several statuses may be active together. `line.update(...)`
changes what the status says (how far it is); only a terminal shows that, so
`line.watched` tells a stage whether counting is worth its cost at all.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, TextIO, cast

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.live import Live
    from rich.spinner import Spinner
    from rich.text import Text

Kind = Literal["step", "detail", "warn"]


class StatusLine(Protocol):
    """An active status: `watched` when a person sees `update`s (a terminal); otherwise updates go nowhere."""

    @property
    def watched(self) -> bool: ...
    def update(self, message: str) -> None: ...


class Reporter(Protocol):
    def step(self, message: str) -> None: ...
    def detail(self, message: str) -> None: ...
    def warn(self, message: str) -> None: ...
    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None: ...
    def status(self, message: str) -> AbstractContextManager[StatusLine]: ...


class _Unwatched:
    """The status line of a log or a pipe: it cannot be redrawn, so what it would say is not said at all."""

    watched = False

    def update(self, message: str) -> None:
        pass


UNWATCHED: StatusLine = _Unwatched()


@dataclass
class RecordingReporter:
    """Keeps every message, for tests to assert on."""

    events: list[tuple[str, str]] = field(default_factory=list)
    watching: bool = False  # as a terminal: statuses are watched, and their updates are kept as ("update", message)
    # A table is several events: the lock keeps them together when threads report at once.
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def _record(self, *events: tuple[str, str]) -> None:
        with self._lock:
            self.events.extend(events)

    def step(self, message: str) -> None:
        self._record(("step", message))

    def detail(self, message: str) -> None:
        self._record(("detail", message))

    def warn(self, message: str) -> None:
        self._record(("warn", message))

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        self._record(("table", title), *(("row", " | ".join(row)) for row in rows))

    @contextmanager
    def status(self, message: str) -> Iterator[StatusLine]:
        self._record(("status", message))
        yield _RecordedLine(self) if self.watching else UNWATCHED

    def messages(self, kind: str | None = None) -> list[str]:
        with self._lock:
            return [m for k, m in self.events if kind is None or k == kind]


@dataclass(frozen=True)
class _RecordedLine:
    reporter: RecordingReporter
    watched: bool = True

    def update(self, message: str) -> None:
        self.reporter._record(("update", message))


@dataclass
class PlainReporter:
    """One line per message, for CI logs and pipes."""

    stream: TextIO = sys.stderr
    out: TextIO = sys.stdout
    # Parallel platform builds report from their threads: one lock keeps each line, and each table, whole.
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def _say(self, line: str) -> None:
        with self._lock:
            print(line, file=self.stream, flush=True)

    def step(self, message: str) -> None:
        self._say(f"==> {message}")

    def detail(self, message: str) -> None:
        self._say(f"    {message}")

    def warn(self, message: str) -> None:
        self._say(f"WARNING: {message}")

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        widths = [max(len(str(c)), *(len(str(r[i])) for r in rows)) if rows else len(str(c)) for i, c in enumerate(columns)]
        line = "  ".join(str(c).ljust(w) for c, w in zip(columns, widths))
        with self._lock:
            print(title, file=self.out)
            print(line, file=self.out)
            print("  ".join("-" * w for w in widths), file=self.out)
            for row in rows:
                print("  ".join(str(v).rjust(w) if str(v)[:1].isdigit() else str(v).ljust(w) for v, w in zip(row, widths)), file=self.out)
            self.out.flush()

    @contextmanager
    def status(self, message: str) -> Iterator[StatusLine]:
        # A log cannot redraw a line: one line as the stage starts; the next message, or the error, says how it went.
        self._say(f"    {message} ...")
        yield UNWATCHED


class _ShownLine:
    """A status on the terminal; `update` swaps its text whole, which rich's refresh thread reads without a lock."""

    watched = True

    def __init__(self, spinner: Spinner, text: Text) -> None:
        self.spinner, self.text, self.updated = spinner, text, False

    def update(self, message: str) -> None:
        from rich.text import Text

        self.text, self.updated = Text(message), True  # drawn at the live display's next tick (10 a second)


class RichReporter:
    """Colour, a real table and live spinners when a person is watching.

    Messages carry user data (paths, container logs, registry answers): they are
    rich `Text`, never markup, so a `[/x]` in a log line is shown, not parsed.
    """

    def __init__(self, stderr: TextIO | None = None, stdout: TextIO | None = None) -> None:
        from rich.console import Console

        self._err = Console(stderr=True, file=stderr)
        self._out = Console(file=stdout)
        # Outermost lock around all output and the live display; rich's refresh thread never takes it,
        # so holding it while rich takes its own locks cannot deadlock.
        self._lock = threading.Lock()
        # Active statuses in start order, replaced (never mutated) so rich's refresh thread can read it unlocked.
        self._shown: tuple[_ShownLine, ...] = ()
        self._live: Live | None = None

    def _say(self, prefix: str, style: str, message: str) -> None:
        from rich.text import Text

        line = Text(prefix, style=style)
        line.append(message, style="dim" if prefix.isspace() else "")
        with self._lock:
            # Printed through the live display's console, so it lands above the spinners.
            self._err.print(line, highlight=False)

    def step(self, message: str) -> None:
        self._say("==> ", "bold cyan", message)

    def detail(self, message: str) -> None:
        self._say("    ", "", message)

    def warn(self, message: str) -> None:
        self._say("WARNING: ", "bold yellow", message)

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        from rich.table import Table
        from rich.text import Text

        table = Table(title=Text(title))
        for i, column in enumerate(columns):
            table.add_column(column, justify="left" if i == 0 else "right")
        for row in rows:
            table.add_row(*[Text(str(v)) for v in row])
        with self._lock:
            # stdout's console knows nothing of the spinners on stderr: on a shared terminal they would be
            # drawn over. Take them down, print, and put them back below (a fresh Live: a restarted one
            # would move up over the table by its old height).
            paused = self._live if self._out.is_terminal else None
            if paused is not None:
                paused.stop()
                self._live = None
            self._out.print(table)
            if paused is not None:
                self._show()

    @contextmanager
    def status(self, message: str) -> Iterator[StatusLine]:
        from rich.spinner import Spinner
        from rich.text import Text

        entry = _ShownLine(Spinner("dots", style="status.spinner"), Text(message))
        try:
            with self._lock:
                self._shown = (*self._shown, entry)
                self._show()
            yield entry
        finally:
            with self._lock:
                if entry.updated and self._live is not None:
                    self._live.refresh()  # its last word (e.g. 197/197 packages) is drawn before the line goes
                self._shown = tuple(e for e in self._shown if e is not entry)
                self._show()

    def _show(self) -> None:
        """Start, redraw or stop the live display to match the active statuses; called holding the lock."""
        from rich.live import Live

        if not self._shown:
            if self._live is not None:
                self._live.stop()  # transient: the spinner lines are erased
                self._live = None
        elif self._live is None:
            # No redirect of sys.stdout/sys.stderr: rich would send anything printed to stdout (a piped answer)
            # to the terminal, and swapping process-wide streams from one thread races with the others.
            self._live = Live(
                get_renderable=self._status_lines,
                console=self._err,
                transient=True,
                refresh_per_second=10,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._live.start(refresh=True)
        else:
            self._live.refresh()  # a status came or went: show it now, not at the next tick

    def _status_lines(self) -> RenderableType:
        from rich.console import Group
        from rich.text import Text

        now = self._err.get_time()
        lines = []
        for entry in self._shown:
            # One line per status, cut with an ellipsis: eight platforms compiling must not wrap into a wall.
            frame = cast("Text", entry.spinner.render(now))  # a Spinner without text renders its frame as Text
            lines.append(Text.assemble(frame, " ", entry.text, no_wrap=True, overflow="ellipsis"))
        return Group(*lines)


def make_reporter(*, out: TextIO | None = None) -> Reporter:
    """Rich on a terminal, plain otherwise (CI, pipes, NO_COLOR). `out`: where tables go instead of stdout."""
    import os

    if sys.stderr.isatty() and not os.environ.get("CI") and not os.environ.get("NO_COLOR"):
        return RichReporter(stdout=out)
    return PlainReporter(out=out or sys.stdout)
