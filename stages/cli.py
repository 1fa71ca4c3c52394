"""The `gosmall` console script: invoke's Program over the task collection in stages.tasks."""

from __future__ import annotations

from invoke import Program

from . import __version__, tasks

program = Program(namespace=tasks.namespace, version=__version__, name="gosmall", binary="gosmall")


def main() -> None:
    program.run()
