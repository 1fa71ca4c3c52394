"""Source to a `Build`: toolchain, compile (with its cache and speculation), prove, needs, runtime files, assemble.

Imports only the ground floor, `config` and its own modules: never `publish` or `trust`.
"""
