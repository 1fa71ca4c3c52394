"""The `gosmall` console script: invoke's Program over the task collection in stages.tasks."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from invoke import Argument, Exit, ParseError, Program
from invoke.util import helpline

from . import __version__, tasks
from .errors import COULD_NOT_RUN, GosmallError

# invoke's core flags that mean something for gosmall; the rest (--pty, --echo, --dry, --hide, sudo, timeouts
# of shell commands, .pyc writing, config files and task listing) are about running shell commands or are
# covered by --help, so they are not offered.
KEPT_CORE_FLAGS = ("complete", "debug", "help", "print-completion-script", "version")
# Shown by `gosmall` and `gosmall --help`: the first five minutes.
EXAMPLES = (
    ("gosmall build-small ./cmd/app", "build a main package of any Go module; no config needed"),
    ("gosmall init && gosmall build-small", "write [tool.gosmall] for every main package, then build them all"),
    ("gosmall run ./cmd/app -- --port 8080", "build, load and run it hardened in the local Docker engine"),
)


class _Program(Program):
    """invoke's Program with gosmall's help and version, only the core flags that apply, and a command line it
    cannot parse exiting 2 (invoke says 1, which means "found something" here)."""

    def core_args(self) -> list[Argument]:
        return [argument for argument in super().core_args() if argument.name in KEPT_CORE_FLAGS]

    def parse_core_args(self) -> None:
        super().parse_core_args()
        # invoke's own steps still read the flags gosmall does not offer: they keep invoke's defaults.
        parsed = self.core[0].args
        for argument in Program.core_args(self):
            if argument.name not in parsed:
                parsed[argument.name] = argument

    def print_help(self) -> None:
        print(f"gosmall {self.version}: build a Go program into a small, reproducible FROM scratch OCI image.\n")
        print("Usage: gosmall [-d] <task> [--task-options] [PACKAGE ...]\n")
        print("Tasks:")
        names = sorted(tasks.namespace.task_names)
        width = max(map(len, names))
        for name in names:
            print(f"  {name:<{width}}  {helpline(tasks.namespace[name]) or ''}")
        print("\nExamples:")
        example_width = max(len(command) for command, _ in EXAMPLES)
        for command, what in EXAMPLES:
            print(f"  {command:<{example_width}}  {what}")
        print("\nOptions:")
        self.print_columns(self.initial_context.help_tuples())
        print(
            "`gosmall <task> --help` shows a task's options. Exit status: 0 done; 1 a check found something (verify-pins, "
            "pin --check, verify-lock, audit, smoke); 2 it could not run; `run` exits with the container's status."
        )

    def print_task_help(self, name: str) -> None:
        super().print_task_help(name)
        examples = tasks.EXAMPLES.get(name, ())
        if examples:
            print("Example:" if len(examples) == 1 else "Examples:")
            for example in examples:
                print(f"  {example}")

    def print_version(self) -> None:
        from .publish.report import builder

        compressor = builder("")["compressor"]
        print(f"gosmall {self.version}")
        print(f"compressor: {compressor['name']} {compressor['version']} (libdeflate), gzip level {compressor['level']}")
        print(f"go: {_toolchain_line()}")

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

# Tasks whose bare words are paths: `gosmall verify-pins a b` means --path a --path b,
# `gosmall build-small ./cmd/app` --package ./cmd/app (invoke itself allows one positional
# value per parameter); the flag each becomes. After `--` every word is a path, except for
# `run`, whose words after `--` are the container's arguments, each kept as one word.
_PATH_TASKS = {
    "verify-pins": "path",
    "pin": "path",
    "build-small": "package",
    "init": "package",
    "run": "package",
    "resolve": "filename",
    "vulns": "target",
    "sbom": "reference",  # `gosmall sbom REF`: an image in a registry, not a path
}
_AFTER_DASHES = {"run": "arg"}


def expand_paths(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    current = ""
    takes_value = False
    after_dashes = ""  # the flag each word after `--` becomes
    names = set(tasks.namespace.task_names)
    task_at = 0
    for word in argv:
        if takes_value:
            out.append(word)
            takes_value = False
        elif after_dashes:
            out.append(f"--{after_dashes}={word}")
        elif current and word in ("-h", "--help"):
            # `gosmall audit --help` is `gosmall --help audit`: invoke would take it for audit's positional TARGET.
            return [*out[:task_at], "--help", current]
        elif word in names or word.replace("_", "-") in names:
            current = word.replace("_", "-")
            task_at = len(out)
            out.append(word)
        elif current in _PATH_TASKS and word == "--":
            after_dashes = _AFTER_DASHES.get(current, _PATH_TASKS[current])
        elif current in _PATH_TASKS and not word.startswith("-"):
            out.append(f"--{_PATH_TASKS[current]}={word}")
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


def _toolchain_line() -> str:
    """The Go gosmall would build the current directory's module with (any new enough Go outside one), or why none."""
    from .build.toolchain import GoModule, find_module, find_toolchain
    from .config import load_project

    cwd = Path.cwd()
    try:
        module = find_module(cwd)
    except GosmallError:
        module = GoModule(cwd, "", (0,), vendored=False)
    try:
        go_version = load_project(cwd, images_required=False).go_version
    except GosmallError:
        go_version = None  # no project, or one that does not load: the toolchain is still worth naming
    try:
        found = find_toolchain(module, go_version=go_version)
    except GosmallError as error:
        return f"none usable: {error.message}"
    return f"{found.version_text} ({found.source}: {found.go})"


def main() -> None:
    program.run([sys.argv[0], *expand_paths(sys.argv[1:])])
