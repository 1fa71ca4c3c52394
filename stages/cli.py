"""The `gosmall` console script: invoke's Program over the task collection in stages.tasks."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from invoke import Exit, ParseError, Program

from . import __version__, tasks
from .errors import COULD_NOT_RUN


class _Program(Program):
    """invoke's Program, except that a command line it cannot parse exits 2 (invoke says 1, which means "found something" here)."""

    def parse_core(self, argv: list[str] | None) -> None:
        with _could_not_parse():
            super().parse_core(argv)

    def parse_tasks(self) -> None:
        with _could_not_parse():
            super().parse_tasks()

    def parse_cleanup(self) -> None:
        with _could_not_parse():
            super().parse_cleanup()


@contextmanager
def _could_not_parse() -> Iterator[None]:
    try:
        yield
    except ParseError as error:
        raise Exit(f"gosmall: error: {error}", code=COULD_NOT_RUN) from None
    except ValueError as error:  # invoke casting a flag's value: `--timeout soon`
        raise Exit(
            f"gosmall: error: a flag's value is not of its type ({error}); see `gosmall --help <task>`.", code=COULD_NOT_RUN
        ) from None


program = _Program(namespace=tasks.namespace, version=__version__, name="gosmall", binary="gosmall")

# Tasks whose bare words are paths: `gosmall verify-pins a b` means --path a --path b
# (invoke itself allows one positional value per parameter). After `--` every word is a path.
_PATH_TASKS = {"verify-pins", "pin"}


def expand_paths(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    current = None
    takes_value = False
    only_paths = False
    names = set(tasks.namespace.task_names)
    for word in argv:
        if takes_value:
            out.append(word)
            takes_value = False
        elif only_paths:
            out.append(f"--path={word}")
        elif word in names or word.replace("_", "-") in names:
            current = word.replace("_", "-")
            out.append(word)
        elif current in _PATH_TASKS and word == "--":
            only_paths = True
        elif current in _PATH_TASKS and not word.startswith("-"):
            out.append(f"--path={word}")
        else:
            takes_value = current in _PATH_TASKS and word in _flags_with_values(current)
            out.append(word)
    return out


def _flags_with_values(task_name: str) -> set[str]:
    """`--format`, `-f`, `--timeout`, …: the flags of a task whose next word is their value, not a path."""
    flags: set[str] = set()
    for argument in tasks.namespace[task_name].get_arguments():
        if argument.takes_value:
            flags.update(f"--{name.replace('_', '-')}" if len(name) > 1 else f"-{name}" for name in argument.names)
    return flags


def main() -> None:
    program.run([sys.argv[0], *expand_paths(sys.argv[1:])])
