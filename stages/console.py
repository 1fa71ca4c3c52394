"""The `gosmall` console script's entry point: start Go, then start Python's part.

Importing invoke and the stages costs about as much as Go's whole up-to-date check; the `go build`s
the last run of the same command made are started first (speculate.py), so Go checks while Python
imports. Nothing here may import invoke or a stage that does.
"""

from __future__ import annotations

import sys

from .build import speculate


def main() -> None:
    arguments = sys.argv[1:]
    speculate.start(arguments)
    from .cli import main as run

    run()  # exits on a failure (invoke's Program.run)
    speculate.remember_run(arguments)


if __name__ == "__main__":
    main()
