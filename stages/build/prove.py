"""Stage 3: prove the binary is what the image promises, from its ELF headers.

A static build must have no interpreter and no DT_NEEDED; every build must be
stripped (no .symtab, no .debug_*) and built for the platform's machine.
"""

from __future__ import annotations

from pathlib import Path

from ..elf import ElfError, ElfFacts, machine_for_platform, read_elf_file
from ..errors import GosmallError
from ..images.model import Platform
from .compile import Binary


def read_elf(path: Path) -> ElfFacts:
    try:
        return read_elf_file(path)
    except ElfError as exc:
        raise GosmallError(f"{path} is not a readable ELF binary ({exc}); the Go build did not produce a Linux executable.") from None


def prove_binary(binary: Binary) -> ElfFacts:
    """The binary's ELF facts, or an error saying which promise it breaks."""
    facts = read_elf(binary.path)
    check_machine(facts, binary.platform, binary.path)
    if facts.debug_sections:
        raise GosmallError(
            f"{binary.path} ({binary.platform}) still has {', '.join(facts.debug_sections)}: it is not stripped. "
            "Do not override -s -w in ldflags."
        )
    if not binary.cgo and not facts.static:
        what = f"interpreter {facts.interpreter}" if facts.interpreter else f"needs {', '.join(facts.needed)}"
        raise GosmallError(
            f"{binary.path} ({binary.platform}) is dynamically linked ({what}) although cgo = false: it cannot run on scratch. "
            "Remove build tags or ldflags that force external linking, or set cgo = true to collect its libraries."
        )
    return facts


def check_machine(facts: ElfFacts, platform: Platform, path: Path) -> None:
    machine = machine_for_platform(platform)
    assert machine is not None, f"config accepted {platform}, which the machine table lacks"
    if not facts.ident.fits(machine):
        # Byte order is named only when it is what differs (ppc64 against ppc64le).
        order = facts.ident.little_endian != machine.little_endian
        found = _machine_words(facts.elf_class, facts.machine, facts.ident.little_endian, order)
        wanted = _machine_words(machine.elf_class, machine.machine_name, machine.little_endian, order)
        raise GosmallError(f"{path} is a {found} binary, but platform {platform} needs {wanted}.")


def _machine_words(bits: int, name: str, little: bool, order: bool) -> str:
    return f"{bits}-bit {name}" + (f" {'little' if little else 'big'}-endian" if order else "")
