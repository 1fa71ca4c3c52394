"""Stage 3: prove the binary is what the image promises, from its ELF headers.

A static build must have no interpreter and no DT_NEEDED; every build must be
stripped (no .symtab, no .debug_*) and built for the platform's machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.segments import InterpSegment

from .compile import Binary
from .elf import tag_string
from .errors import GosmallError
from .image import Platform

# e_machine and ELF class (32/64) pyelftools reports for each platform.
EXPECTED_MACHINE: dict[str, tuple[str, int]] = {
    "amd64": ("EM_X86_64", 64),
    "arm64": ("EM_AARCH64", 64),
    "arm": ("EM_ARM", 32),
    "386": ("EM_386", 32),
    "ppc64le": ("EM_PPC64", 64),
    "s390x": ("EM_S390", 64),
    "riscv64": ("EM_RISCV", 64),
}


@dataclass(frozen=True)
class ElfFacts:
    machine: str
    elf_class: int
    interpreter: str | None
    needed: tuple[str, ...]
    section_names: tuple[str, ...]

    @property
    def static(self) -> bool:
        return self.interpreter is None and not self.needed

    @property
    def debug_sections(self) -> tuple[str, ...]:
        return tuple(s for s in self.section_names if s.startswith((".debug", ".zdebug")) or s == ".symtab")


def read_elf(path: Path) -> ElfFacts:
    try:
        with path.open("rb") as stream:
            elf = ELFFile(stream)
            interpreter = None
            for segment in elf.iter_segments():
                if isinstance(segment, InterpSegment):
                    interpreter = segment.get_interp_name()
            needed: list[str] = []
            names: list[str] = []
            for section in elf.iter_sections():
                names.append(section.name)
                if isinstance(section, DynamicSection):
                    needed.extend(tag_string(tag) for tag in section.iter_tags() if tag.entry.d_tag == "DT_NEEDED")
            return ElfFacts(elf["e_machine"], elf.elfclass, interpreter, tuple(needed), tuple(names))
    except (ELFError, OSError, ValueError) as exc:
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
    machine, elf_class = EXPECTED_MACHINE[platform.architecture]
    if (facts.machine, facts.elf_class) != (machine, elf_class):
        raise GosmallError(
            f"{path} is a {facts.elf_class}-bit {facts.machine} binary, but platform {platform} needs {elf_class}-bit {machine}."
        )
