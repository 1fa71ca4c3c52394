"""The `gosmall` console script: invoke's Program over the task collection in stages.tasks."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from invoke import Program

from . import __version__, tasks

program = Program(namespace=tasks.namespace, version=__version__, name="gosmall", binary="gosmall")

# Tasks whose bare words are paths: `gosmall verify-pins a b` means --path a --path b
# (invoke itself allows one positional value per parameter).
_PATH_TASKS = {"verify-pins", "pin"}
_FLAGS_WITH_VALUES = {"--format", "-f", "--path", "-p"}


def expand_paths(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    current = None
    takes_value = False
    names = set(tasks.namespace.task_names)
    for word in argv:
        if takes_value:
            out.append(word)
            takes_value = False
        elif word in names or word.replace("_", "-") in names:
            current = word.replace("_", "-")
            out.append(word)
        elif current in _PATH_TASKS and not word.startswith("-"):
            out.append(f"--path={word}")
        else:
            takes_value = current in _PATH_TASKS and word in _FLAGS_WITH_VALUES
            out.append(word)
    return out


def main() -> None:
    program.run([sys.argv[0], *expand_paths(sys.argv[1:])])
