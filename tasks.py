"""`invoke build-small` in this repository: the very tasks the `gosmall` script runs."""

from stages.tasks import namespace  # noqa: F401
