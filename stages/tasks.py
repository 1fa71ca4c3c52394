"""gosmall's tasks: wiring only. Each reads its flags, loads the config, calls stages.

The same collection backs `invoke <task>` in this repository (tasks.py imports
it) and the `gosmall` console script (stages.cli), so both run the same code.
Config layers, later wins: built-in defaults, [tool.gosmall] in the nearest
pyproject.toml, environment (SOURCE_DATE_EPOCH, DOCKER_HOST), task flags.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

from invoke import Collection, Exit, task

from .config import load_project
from .errors import GosmallError
from .pipeline import build_small as run_build_small
from .reporter import make_reporter

F = TypeVar("F", bound=Callable[..., Any])


def speaks_to_user(function: F) -> F:
    """The one place a GosmallError becomes a message on stderr and an exit status."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except GosmallError as error:
            raise Exit(f"gosmall: error: {error.message}", code=error.code) from None
        except KeyboardInterrupt:
            raise Exit("gosmall: interrupted; earlier outputs were left as they were.", code=130) from None

    return wrapper  # type: ignore[return-value]


@task(
    help={
        "image": "Build only this image (a key of [tool.gosmall.images]); default: all of them.",
        "load": "Then load image.tar into the Docker engine and check its image ID.",
        "smoke": "Then load it and run it hardened until it answers (implies --load).",
    }
)
@speaks_to_user
def build_small(c: Any, image: str | None = None, load: bool = False, smoke: bool = False) -> None:
    """Build each image into <output>/<image>/: an OCI layout, a docker-loadable image.tar and report.json."""
    reporter = make_reporter()
    project = load_project()
    run_build_small(project, reporter, names=(image,) if image else ())


namespace = Collection.from_module(__import__(__name__, fromlist=["*"]))
