"""A command run on a pseudo-terminal, as a person at a terminal runs it: what the screen was sent."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# What rich draws on a terminal and a test reads past: colours, cursor moves, erasing.
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")


@dataclass(frozen=True)
class OnTerminal:
    returncode: int
    raw: str  # everything the terminal was sent, escape sequences and all

    @property
    def text(self) -> str:
        """The output without escape sequences, each redraw of the status line on its own line."""
        return _CONTROL.sub("", self.raw).replace("\r\n", "\n").replace("\r", "\n")


def run_on_terminal(argv: Sequence[str], *, cwd: Path, env: dict[str, str], timeout: float = 600, columns: int = 200) -> OnTerminal:
    """`argv` with stdin, stdout and stderr on a pty `columns` wide; CI and NO_COLOR left out, so gosmall shows it rich."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    environ = {k: v for k, v in env.items() if k not in ("CI", "NO_COLOR", "COLUMNS", "LINES")}
    environ["TERM"] = "xterm-256color"
    with subprocess.Popen(list(argv), cwd=cwd, env=environ, stdin=slave, stdout=slave, stderr=slave, start_new_session=True) as process:
        os.close(slave)
        received = bytearray()
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if not select.select([master], [], [], max(0.0, deadline - time.monotonic()))[0]:
                    continue
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: every writer closed the terminal
                    break
                if not chunk:
                    break
                received += chunk
            else:
                process.kill()
            returncode = process.wait(timeout=30)
        finally:
            os.close(master)
    return OnTerminal(returncode, received.decode(errors="replace"))
