"""gosmall: build a Go program into the smallest reproducible scratch OCI image.

The package is a pipeline; each module is one stage, read top to bottom:
config -> toolchain -> compile -> prove -> runtime_files -> assemble ->
(oci_layout, docker_archive) -> report. `tasks` wires them to Invoke.
"""

__version__ = "0.1.0"
