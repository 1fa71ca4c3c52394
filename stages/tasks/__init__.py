"""gosmall's tasks: wiring only. Each reads its flags, loads the config, calls stages.

One collection of every area's tasks (build.py, publish.py, trust.py; wiring.py holds what they share). The
same collection backs `invoke <task>` in this repository (tasks.py imports it) and the `gosmall` console script
(stages.cli), so both run the same code. Config layers, later wins: built-in defaults, [tool.gosmall] in the
nearest pyproject.toml, environment (SOURCE_DATE_EPOCH, DOCKER_HOST), task flags.
"""

from __future__ import annotations

from invoke import Collection

from . import build, publish, trust
from .wiring import EXAMPLES

namespace = Collection()
for _area in (build, publish, trust):
    for _task in Collection.from_module(_area).tasks.values():
        namespace.add_task(_task)

__all__ = ["EXAMPLES", "namespace"]
