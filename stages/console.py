"""The `gosmall` console script's entry point: start Go, then start Python's part.

Importing invoke and the stages costs about as much as Go's whole up-to-date check; the `go build`s
the last run of the same command made are started first (speculate.py), so Go checks while Python
imports. Nothing here may import invoke or a stage that does.
"""

from __future__ import annotations

import os
import signal
import sys

from .build import speculate


def main() -> None:
    arguments = sys.argv[1:]
    speculate.start(arguments)
    from .cli import main as run

    try:
        run()  # exits on a failure (invoke's Program.run)
    except BrokenPipeError:
        # The reader stopped early (`gosmall --help | head`): end as a pipeline's writer ends, without a traceback,
        # and with stdout pointed away so the interpreter's last flush cannot raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(128 + signal.SIGPIPE)
    speculate.remember_run(arguments)


if __name__ == "__main__":
    main()
