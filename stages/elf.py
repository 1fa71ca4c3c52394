"""The one ELF reader and the one machine table.

`read_elf` gives every fact gosmall takes from an ELF file, for every stage
that asks: prove (machine, class, PT_INTERP, DT_NEEDED, section names), the
cgo library resolver (also DT_RPATH, DT_RUNPATH, DT_SONAME, DT_FLAGS_1) and
audit (the same, for files inside any image). It reads a file object, so an
image's file in memory and a file on disk are read alike; `read_elf_file` is
the thin wrapper that takes a path.

`MACHINES` is the one table of the platforms gosmall builds for: how Go, ELF,
uname(2) and Debian's multiarch directories each name one machine.

pyelftools sets a dynamic tag's string (`tag.needed`, `tag.rpath`, ...) with
setattr at run time, so its types cannot name it; `tag_string` reads it once,
checked.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Literal

from .images.model import Platform

if TYPE_CHECKING:
    from elftools.elf.dynamic import DynamicTag

# The tags whose value pyelftools resolves through the dynamic string table.
STRING_TAGS = frozenset({"DT_NEEDED", "DT_RPATH", "DT_RUNPATH", "DT_SONAME"})
MAGIC = b"\x7fELF"
# Enough for the identification and the e_machine/e_flags fields of either class.
HEADER_SIZE = 52
EF_ARM_ABI_FLOAT_SOFT = 0x200
DF_1_NODEFLIB = 0x800


@cache
def _machine_names() -> dict[int, str]:
    # pyelftools is imported when an ELF file is read, not when the table is: config and compile use only the
    # table, and importing pyelftools costs a no-op build more than Go's own up-to-date check does.
    from elftools.elf.enums import ENUM_E_MACHINE

    return {number: name for name, number in ENUM_E_MACHINE.items() if isinstance(number, int)}


@dataclass(frozen=True)
class Machine:
    """One platform as Go, ELF, uname and Debian name it."""

    platform: Platform
    e_machine: int
    elf_class: int  # 32 or 64
    little_endian: bool
    triplet: str  # Debian's multiarch directory, e.g. /usr/lib/x86_64-linux-gnu
    uname: tuple[str, ...]  # what `uname -m` says on such a machine
    soft_float: bool = False  # 32-bit ARM: EABI soft-float (armel) rather than hard-float (armhf)

    @property
    def machine_name(self) -> str:
        return _machine_names().get(self.e_machine, f"e_machine {self.e_machine}")


# The platforms config accepts, in the order messages list them.
MACHINES = (
    Machine(Platform("linux", "amd64"), 62, 64, True, "x86_64-linux-gnu", ("x86_64", "amd64")),
    Machine(Platform("linux", "arm64"), 183, 64, True, "aarch64-linux-gnu", ("aarch64", "arm64")),
    Machine(Platform("linux", "arm", "v6"), 40, 32, True, "arm-linux-gnueabi", ("armv6l",), soft_float=True),
    Machine(Platform("linux", "arm", "v7"), 40, 32, True, "arm-linux-gnueabihf", ("armv7l",)),
    Machine(Platform("linux", "386"), 3, 32, True, "i386-linux-gnu", ("i686", "i386")),
    Machine(Platform("linux", "ppc64le"), 21, 64, True, "powerpc64le-linux-gnu", ("ppc64le",)),
    Machine(Platform("linux", "s390x"), 22, 64, False, "s390x-linux-gnu", ("s390x",)),
    Machine(Platform("linux", "riscv64"), 243, 64, True, "riscv64-linux-gnu", ("riscv64",)),
)


def machine_for_platform(platform: Platform) -> Machine | None:
    """The table's row for a platform; linux/arm without a variant is v7, Go's default GOARM."""
    wanted = Platform(platform.os, platform.architecture, platform.variant or ("v7" if platform.architecture == "arm" else ""))
    return next((m for m in MACHINES if m.platform == wanted), None)


def machine_for_uname(name: str) -> Machine | None:
    """The row for what `uname -m` (Python's platform.machine()) reports."""
    return next((m for m in MACHINES if name.lower() in m.uname), None)


@dataclass(frozen=True)
class ElfIdent:
    """What ld.so compares before it accepts a library for a binary."""

    elf_class: int  # 32 or 64
    little_endian: bool
    machine: int  # e_machine
    flags: int  # e_flags, for ARM's float ABI

    def matches(self, other: ElfIdent) -> bool:
        return (self.elf_class, self.little_endian, self.machine) == (other.elf_class, other.little_endian, other.machine)

    @property
    def machine_name(self) -> str:
        return _machine_names().get(self.machine, f"e_machine {self.machine}")

    def describe(self) -> str:
        return f"{self.machine_name}, {self.elf_class}-bit, {'little' if self.little_endian else 'big'}-endian"

    def fits(self, machine: Machine) -> bool:
        """Whether a binary with this identity runs on the machine (the float ABI aside: Go's own arm binaries name none)."""
        return (self.machine, self.elf_class, self.little_endian) == (machine.e_machine, machine.elf_class, machine.little_endian)

    def row(self) -> Machine | None:
        """The machine table's row for this identity; for 32-bit ARM the soft-float flag picks armel over armhf."""
        rows = [m for m in MACHINES if self.fits(m)]
        soft = bool(self.flags & EF_ARM_ABI_FLOAT_SOFT)
        return next((m for m in rows if m.soft_float == soft), rows[0] if rows else None)


def multiarch_triplet(ident: ElfIdent) -> str | None:
    """Debian's multiarch directory name for a machine, or None if we know none."""
    row = ident.row()
    return row.triplet if row is not None else None


def parse_ident(header: bytes) -> ElfIdent | None:
    """The ELF identity in the first bytes of a file, or None when they are not an ELF header.

    Read from the raw header rather than through pyelftools: a file ld.so
    would reject (a truncated stub, a foreign class) must be told apart, not
    make the parser fail.
    """
    if len(header) < HEADER_SIZE or header[:4] != MAGIC or header[4] not in (1, 2) or header[5] not in (1, 2):
        return None
    order: Literal["little", "big"] = "little" if header[5] == 1 else "big"
    elf_class = 32 if header[4] == 1 else 64
    flags_at = 36 if elf_class == 32 else 48
    flags = int.from_bytes(header[flags_at : flags_at + 4], order)
    return ElfIdent(elf_class, order == "little", int.from_bytes(header[18:20], order), flags)


def read_elf_ident(path: Path) -> ElfIdent | None:
    """The ELF identity of a file, or None when it is not ELF or cannot be read."""
    try:
        with path.open("rb") as stream:
            return parse_ident(stream.read(HEADER_SIZE))
    except OSError:
        return None


@dataclass(frozen=True)
class ElfFacts:
    """Everything gosmall reads from one ELF file, as the file states it."""

    ident: ElfIdent
    interpreter: str | None  # PT_INTERP
    needed: tuple[str, ...]  # DT_NEEDED, in order
    rpath: str | None  # DT_RPATH as written (ld.so ignores it when DT_RUNPATH is present)
    runpath: str | None  # DT_RUNPATH
    soname: str | None  # DT_SONAME
    flags_1: int  # DT_FLAGS_1
    section_names: tuple[str, ...]

    @property
    def machine(self) -> str:
        return self.ident.machine_name

    @property
    def elf_class(self) -> int:
        return self.ident.elf_class

    @property
    def static(self) -> bool:
        return self.interpreter is None and not self.needed

    @property
    def nodeflib(self) -> bool:
        return bool(self.flags_1 & DF_1_NODEFLIB)

    @property
    def debug_sections(self) -> tuple[str, ...]:
        return tuple(s for s in self.section_names if s.startswith((".debug", ".zdebug")) or s == ".symtab")


class ElfError(Exception):
    """An ELF file gosmall cannot read; the message says why. Callers say what it means for them."""


class NotElfError(ElfError):
    """The bytes do not start with an ELF header of a known class and byte order."""


def _parse_errors() -> tuple[type[BaseException], ...]:
    """What pyelftools raises on a truncated or hostile file, besides its own ELFError."""
    from elftools.common.exceptions import ELFError

    return (ELFError, OSError, ValueError, KeyError, IndexError, AssertionError, struct.error)


def read_elf(stream: BinaryIO) -> ElfFacts:
    """The ELF facts of a seekable file object, or ElfError (NotElfError when it is not ELF at all)."""
    try:
        stream.seek(0)
        ident = parse_ident(stream.read(HEADER_SIZE))
    except OSError as exc:
        raise ElfError(str(exc)) from None
    if ident is None:
        raise NotElfError("not an ELF file")
    from elftools.elf.dynamic import DynamicSegment
    from elftools.elf.elffile import ELFFile
    from elftools.elf.segments import InterpSegment

    interpreter: str | None = None
    needed: list[str] = []
    strings: dict[str, str] = {}
    flags_1 = 0
    try:
        elf = ELFFile(stream)
        for segment in elf.iter_segments():
            if isinstance(segment, InterpSegment):
                interpreter = segment.get_interp_name()
            elif isinstance(segment, DynamicSegment):
                for tag in segment.iter_tags():
                    kind = tag.entry.d_tag
                    if kind == "DT_NEEDED":
                        needed.append(tag_string(tag))
                    elif kind in STRING_TAGS:
                        strings[kind] = tag_string(tag)
                    elif kind == "DT_FLAGS_1":
                        flags_1 = tag.entry.d_val
        names = tuple(section.name for section in elf.iter_sections())
    except _parse_errors() as exc:
        raise ElfError(str(exc) or type(exc).__name__) from None
    return ElfFacts(
        ident=ident,
        interpreter=interpreter,
        needed=tuple(needed),
        rpath=strings.get("DT_RPATH"),
        runpath=strings.get("DT_RUNPATH"),
        soname=strings.get("DT_SONAME"),
        flags_1=flags_1,
        section_names=names,
    )


def read_elf_bytes(data: bytes) -> ElfFacts:
    return read_elf(io.BytesIO(data))


def read_elf_file(path: Path) -> ElfFacts:
    try:
        with path.open("rb") as stream:
            return read_elf(stream)
    except OSError as exc:
        raise ElfError(exc.strerror or str(exc)) from None


def read_section(data: bytes | BinaryIO, name: str) -> bytes | None:
    """The contents of section `name` of an ELF file in memory or an open file; None when it has no such section (or
    no section table).

    For what a section holds beyond the facts above: the SBOM reads Go's build info from `.go.buildinfo`, needs the
    function names in `.gopclntab` (from the file, which is not read whole).
    """
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    stream.seek(0)
    if parse_ident(stream.read(HEADER_SIZE)) is None:
        raise NotElfError("not an ELF file")
    from elftools.elf.elffile import ELFFile

    try:
        section = ELFFile(stream).get_section_by_name(name)
        if section is None or section["sh_type"] == "SHT_NOBITS":
            return None
        return bytes(section.data())
    except _parse_errors() as exc:
        raise ElfError(str(exc) or type(exc).__name__) from None


def tag_string(tag: DynamicTag) -> str:
    """The string a DT_NEEDED, DT_RPATH, DT_RUNPATH or DT_SONAME tag names."""
    kind = tag.entry.d_tag
    if kind not in STRING_TAGS:
        raise ValueError(f"{kind} names no string")
    value = getattr(tag, kind[3:].lower())
    if not isinstance(value, str):
        raise ValueError(f"{kind} is not a string")
    return value


# Go's linker puts its build ID note (name "Go", type 4) in the first page of text; `go tool buildid`
# reads it from the first 32 KiB the same way.
_GO_NOTE_SPAN = 32 * 1024
_GO_BUILD_ID_NOTE = 4


def read_go_build_id(path: Path) -> str | None:
    """The Go build ID (`go tool buildid`) of a binary Go linked, read from its ELF note; None when it has none.

    Go rewrites it whenever it links: it ends in a hash of the linked bytes, which is what makes it
    Go's own answer to "is this output still the one built from these inputs". No pyelftools: a
    no-op build asks this of every binary, and must cost next to nothing.
    """
    try:
        with path.open("rb") as stream:
            head = stream.read(_GO_NOTE_SPAN)
    except OSError:
        return None
    ident = parse_ident(head)
    if ident is None:
        return None
    order = "<" if ident.little_endian else ">"
    at = head.find(b"Go\x00\x00", 12)
    while at != -1:
        namesz, descsz, kind = struct.unpack_from(order + "III", head, at - 12)
        if namesz == 4 and kind == _GO_BUILD_ID_NOTE and 0 < descsz <= 1024 and at + 4 + descsz <= len(head):
            return head[at + 4 : at + 4 + descsz].decode("ascii", "replace")
        at = head.find(b"Go\x00\x00", at + 1)
    return None
