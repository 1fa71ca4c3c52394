"""How stages talk to the person running them.

Stages never print. They take a `Reporter` made by the task: rich on a
terminal, plain lines in CI or a pipe, and a recording one in tests.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, TextIO

Kind = Literal["step", "detail", "warn"]


class Reporter(Protocol):
    def step(self, message: str) -> None: ...
    def detail(self, message: str) -> None: ...
    def warn(self, message: str) -> None: ...
    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None: ...


@dataclass
class RecordingReporter:
    """Keeps every message, for tests to assert on."""

    events: list[tuple[str, str]] = field(default_factory=list)

    def step(self, message: str) -> None:
        self.events.append(("step", message))

    def detail(self, message: str) -> None:
        self.events.append(("detail", message))

    def warn(self, message: str) -> None:
        self.events.append(("warn", message))

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        self.events.append(("table", title))
        for row in rows:
            self.events.append(("row", " | ".join(row)))

    def messages(self, kind: str | None = None) -> list[str]:
        return [m for k, m in self.events if kind is None or k == kind]


@dataclass
class PlainReporter:
    """One line per message, for CI logs and pipes."""

    stream: TextIO = sys.stderr
    out: TextIO = sys.stdout

    def step(self, message: str) -> None:
        print(f"==> {message}", file=self.stream, flush=True)

    def detail(self, message: str) -> None:
        print(f"    {message}", file=self.stream, flush=True)

    def warn(self, message: str) -> None:
        print(f"WARNING: {message}", file=self.stream, flush=True)

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        widths = [max(len(str(c)), *(len(str(r[i])) for r in rows)) if rows else len(str(c)) for i, c in enumerate(columns)]
        line = "  ".join(str(c).ljust(w) for c, w in zip(columns, widths))
        print(title, file=self.out)
        print(line, file=self.out)
        print("  ".join("-" * w for w in widths), file=self.out)
        for row in rows:
            print("  ".join(str(v).rjust(w) if str(v)[:1].isdigit() else str(v).ljust(w) for v, w in zip(row, widths)), file=self.out)
        self.out.flush()


class RichReporter:
    """Colour and a real table when a person is watching.

    Messages carry user data (paths, container logs, registry answers): they are
    rich `Text`, never markup, so a `[/x]` in a log line is shown, not parsed.
    """

    def __init__(self, stderr: TextIO | None = None, stdout: TextIO | None = None) -> None:
        from rich.console import Console

        self._err = Console(stderr=True, file=stderr)
        self._out = Console(file=stdout)

    def _say(self, prefix: str, style: str, message: str) -> None:
        from rich.text import Text

        line = Text(prefix, style=style)
        line.append(message, style="dim" if prefix.isspace() else "")
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
        self._out.print(table)


def make_reporter(*, out: TextIO | None = None) -> Reporter:
    """Rich on a terminal, plain otherwise (CI, pipes, NO_COLOR). `out`: where tables go instead of stdout."""
    import os

    if sys.stderr.isatty() and not os.environ.get("CI") and not os.environ.get("NO_COLOR"):
        return RichReporter(stdout=out)
    return PlainReporter(out=out or sys.stdout)
