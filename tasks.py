"""`invoke build-small` in this repository: the very tasks the `gosmall` script runs."""

from gosmall.tasks import namespace  # noqa: F401
