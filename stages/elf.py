"""The one ELF reader and the one machine table.

`read_elf` gives every fact gosmall takes from an ELF file, for every stage
that asks: prove (machine, class, PT_INTERP, DT_NEEDED, section names), the
cgo library resolver (also DT_RPATH, DT_RUNPATH, DT_SONAME, DT_FLAGS_1) and
audit (the same, for files inside any image). It reads a file object, so an
image's file in memory and a file on disk are read alike; `read_elf_file` is
the thin wrapper that takes a path.

`read_go_function_table` is the one reader of a Go binary's pclntab, which
`-s -w` keep: the functions it links (needs, vulns) and, from the inline trees
found through `runtime.firstmoduledata`, the ones the compiler inlined (vulns).

`MACHINES` is the one table of the platforms gosmall builds for: how Go, ELF,
uname(2) and Debian's multiarch directories each name one machine.

pyelftools sets a dynamic tag's string (`tag.needed`, `tag.rpath`, ...) with
setattr at run time, so its types cannot name it; `tag_string` reads it once,
checked.
"""

from __future__ import annotations

import array
import bisect
import functools
import io
import struct
import sys
from collections.abc import Callable, Iterator
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


class NoPclntabError(ElfError):
    """An ELF file without a .gopclntab section: not a Go program."""


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

    For what a section holds beyond the facts above: the SBOM reads Go's build info from `.go.buildinfo` (from the
    file, which is not read whole).
    """
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    section = next((s for s in _sections(stream)[1] if s.name == name), None)
    if section is None or section.nobits:
        return None
    return _read_at(stream, section.offset, section.size)


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


# -- Go's function table: every linked function, and the functions inlined into them ----------------------
#
# The layouts are Go's own (runtime/symtab.go, runtime/runtime2.go, runtime/symtabinl.go, internal/abi/symtab.go).
# pcHeader: magic uint32, pad1, pad2, minLC, ptrSize uint8, then eight words: nfunc, nfiles, (once textStart),
# funcnameOffset, cuOffset, filetabOffset, pctabOffset, pclnOffset. Go 1.18 (0xfffffff0) and 1.20+ (0xfffffff1).
_PCLNTAB_MAGICS = (0xFFFFFFF0, 0xFFFFFFF1)
_FUNC_SIZE = 44  # runtime._func up to its pcdata array: ten uint32/int32 fields, then funcID, flag, pad, nfuncdata
_PCDATA_INL_TREE_INDEX = 2
_FUNCDATA_INL_TREE = 3
_INLINED_CALL_SIZE = 16  # runtime.inlinedCall: funcID uint8, [3]byte, nameOff, parentPc, startLine int32
_NO_FUNCDATA = 0xFFFFFFFF
# runtime.moduledata starts with pcHeader, then six slices and findfunctab, minpc, maxpc: word 22 is `text`.
# Where `gofunc` (the base of FUNCDATA offsets) sits after that depends on the Go release, so each layout is
# checked against a field that can only hold one value before it is trusted:
#   Go 1.27:      ... end, gcdata, gcbss, types, typedesclen, etypes, itaboffset, itabsize, rodata, gofunc, epclntab
#                 (word 43 is gofunc, word 44 epclntab: the end of .gopclntab)
#   Go 1.20-1.2x: ... end, gcdata, gcbss, types, etypes, rodata, gofunc, textsectmap
#                 (word 39 rodata, word 40 gofunc, at or after it)
_MODULEDATA_WORDS = 45
_GOFUNC_WORD, _EPCLNTAB_WORD = 43, 44
_OLD_RODATA_WORD, _OLD_GOFUNC_WORD = 39, 40


@dataclass(frozen=True)
class GoFunctions:
    """The function names a Go binary's pclntab keeps, even under `-s -w`.

    `linked` are the functions with a body of their own. `inlined` are the ones the compiler copied into a
    caller, read from each function's inline tree (FUNCDATA_InlTree): a function inlined at every call site
    has no body of its own, and only the inline trees still name it. `inline_trees` says whether they were
    read (the module data was found); when not, `inlined` holds every other name the pclntab's name table
    has, which is where inline trees point.
    """

    linked: frozenset[str]
    inlined: frozenset[str]
    inline_trees: bool

    @property
    def all(self) -> frozenset[str]:
        return self.linked | self.inlined


@dataclass(frozen=True)
class _Section:
    name: str
    address: int
    offset: int
    size: int
    nobits: bool


# Where the section header table is, by ELF class: e_shoff and its width, then e_shentsize, e_shnum, e_shstrndx.
_SECTION_TABLE = {32: (0x20, "I", 0x2E), 64: (0x28, "Q", 0x3A)}
# One section header's sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size, sh_link, by class.
_SECTION_HEADER = {32: "IIIIIII", 64: "IIQQQQI"}
_SHT_NOBITS = 8
_SHN_XINDEX = 0xFFFF


def _sections(stream: BinaryIO) -> tuple[ElfIdent, tuple[_Section, ...]]:
    """The identity and section table of an ELF file, read from the raw headers: what the pclntab and build info
    readers need, without pyelftools, whose import alone costs `gosmall vulns` more than reading a binary's functions."""
    header = _read_at(stream, 0, min(64, _size(stream)))
    ident = parse_ident(header)
    if ident is None:
        raise NotElfError("not an ELF file")
    order = "<" if ident.little_endian else ">"
    at, width, counts_at = _SECTION_TABLE[ident.elf_class]
    if len(header) < counts_at + 6:
        raise ElfError("the ELF header is truncated")
    shoff = struct.unpack_from(order + width, header, at)[0]
    entsize, count, names_index = struct.unpack_from(order + "HHH", header, counts_at)
    layout = order + _SECTION_HEADER[ident.elf_class]
    if shoff == 0:
        return ident, ()
    if entsize < struct.calcsize(layout):
        raise ElfError(f"the ELF header gives a section header size of {entsize}")
    first = struct.unpack_from(layout, _read_at(stream, shoff, entsize))
    # More than 0xff00 sections, or a name table index past that: the real values are in section 0 (ELF's extended numbering).
    count = count or first[5]
    names_index = first[6] if names_index == _SHN_XINDEX else names_index
    if count * entsize > _size(stream):
        raise ElfError(f"the ELF header gives {count} sections, more than the file holds")
    table = _read_at(stream, shoff, count * entsize)
    raw = [struct.unpack_from(layout, table, i * entsize) for i in range(count)]
    if not raw:
        return ident, ()
    if names_index >= count:
        raise ElfError(f"the section name table's index ({names_index}) is past the {count} sections")
    _, kind, _, _, names_offset, names_size, _ = raw[names_index]
    # Index 0 (SHN_UNDEF) says there is no name table: every section is unnamed.
    names = b"\0" if names_index == 0 or kind == _SHT_NOBITS else _read_at(stream, names_offset, names_size)
    out = []
    for name_at, kind, _, address, offset, size, _ in raw:
        name_at = name_at if names_index else 0
        end = names.find(b"\0", name_at)
        if end < 0:
            raise ElfError("a section's name runs past the section name table")
        out.append(_Section(names[name_at:end].decode("utf-8", "replace"), address, offset, size, kind == _SHT_NOBITS))
    return ident, tuple(out)


def _size(stream: BinaryIO) -> int:
    try:
        return stream.seek(0, io.SEEK_END)
    except OSError as exc:
        raise ElfError(str(exc)) from None


def read_go_functions(stream: BinaryIO) -> GoFunctions:
    """Every function the Go binary in `stream` links or inlines; ElfError when it has no pclntab gosmall reads."""
    table = read_go_function_table(stream)
    return GoFunctions(table.linked, table.inlined(), table.inline_trees)


def read_go_function_table(stream: BinaryIO) -> GoFunctionTable:
    """The Go binary's function table, to ask about single functions without walking every inline tree; ElfError
    when it has no pclntab gosmall reads. Inline trees are read from `stream`: keep it open while asking.

    The inline trees hang off `runtime.firstmoduledata`, which a stripped binary does not name: it is found
    the way GoReSym finds it, as the one pointer-aligned word in the binary's data that holds the pclntab's
    address, followed by the address of its function name table.
    """
    ident, sections = _sections(stream)
    pclntab_section = next((s for s in sections if s.name == ".gopclntab" and not s.nobits), None)
    if pclntab_section is None:
        raise NoPclntabError("no .gopclntab section: not a Go binary, or one from before Go 1.2")
    pclntab = _read_at(stream, pclntab_section.offset, pclntab_section.size)
    order = "<" if ident.little_endian else ">"
    table = _Pclntab.parse(pclntab, order)

    def locate() -> tuple[int | None, bytes, int]:
        gofunc = _find_gofunc(stream, sections, pclntab_section, table, order)
        if gofunc is None:
            return None, b"", 0
        # The inline trees lie where gofunc points (Go 1.27 puts them inside .gopclntab): that section is read once.
        home = next((s for s in sections if not s.nobits and s.address and s.address <= gofunc < s.address + s.size), None)
        if home is None:
            return gofunc, b"", 0
        return gofunc, pclntab if home is pclntab_section else _read_at(stream, home.offset, home.size), home.address

    return GoFunctionTable(table, locate, lambda address, size: _read_mapped(stream, sections, address, size))


class GoFunctionTable:
    """One Go binary's pclntab: the linked functions, every name the name table holds, and, asked per name,
    whether a function was inlined somewhere (`is_inlined`), which reads only the inline trees that can hold it.

    `inlined()` walks every inline tree, as govulncheck does for an unstripped binary. `is_inlined` gives the
    same answers for one name at a fraction of the cost: it looks for the name's offset in the trees' region,
    and reads the length (the largest index of the function's PCDATA_InlTreeIndex table) only of the trees a
    match falls in. Without module data (`inline_trees` False) the name table stands in: a name in it that no
    function has is one only inline trees point at.
    """

    def __init__(
        self, table: _Pclntab, locate: Callable[[], tuple[int | None, bytes, int]], read_mapped: Callable[[int, int], bytes | None]
    ) -> None:
        self._table = table
        self._locate = locate  # gofunc, the section holding the trees, its address: found only when asked
        self._read_mapped = read_mapped
        self._all_inlined: frozenset[str] | None = None
        self._trees: tuple[list[int], dict[int, list[int]]] | None = None  # sorted starts in blob; start -> functions
        self._counts: dict[int, int] = {}
        self._region_words: frozenset[int] | None = None

    @functools.cached_property
    def linked(self) -> frozenset[str]:
        """The functions with a body of their own."""
        return self._table.linked_names()

    @functools.cached_property
    def names(self) -> frozenset[str]:
        """Every name the name table holds: the linked functions and those only inline trees point at."""
        return self._table.all_names()

    @functools.cached_property
    def _located(self) -> tuple[int | None, bytes, int]:
        return self._locate()

    @property
    def _gofunc(self) -> int | None:
        return self._located[0]

    @property
    def _blob(self) -> bytes:
        return self._located[1]

    @property
    def _base(self) -> int:
        return self._located[2]

    @property
    def inline_trees(self) -> bool:
        """Whether the inline trees were found (the module data); when not, the name table stands in for them."""
        return self._gofunc is not None

    def _read(self, address: int, size: int) -> bytes | None:
        at = address - self._base
        if 0 <= at and at + size <= len(self._blob):
            return self._blob[at : at + size]
        return self._read_mapped(address, size)

    def inlined(self) -> frozenset[str]:
        """Every function named in an inline tree."""
        if self._all_inlined is None:
            if self._gofunc is None:
                self._all_inlined = self.names - self.linked
            else:
                self._all_inlined = self._table.inlined_names(self._read, self._gofunc)
        return self._all_inlined

    def is_inlined(self, name: str) -> bool:
        """Whether some inline tree names `name`."""
        if name not in self.names:
            return False
        if self._gofunc is None or self._all_inlined is not None:
            return name in self.inlined()
        starts, functions = self._tree_starts()
        if any(not 0 <= start < len(self._blob) for start in starts[:1] + starts[-1:]):
            return name in self.inlined()  # a tree outside the section read: walk them all, from the file
        if not starts:
            return False
        end = starts[-1] + self._count(starts[-1], functions) * _INLINED_CALL_SIZE  # the trees' region ends with the last
        words = self._words(starts, end)
        for offset in self._table.name_offsets(name):
            if words is not None and offset not in words:
                continue  # no aligned word of the trees' region holds it: no tree names it
            pattern = struct.pack(self._table.order + "i", offset)
            at = self._blob.find(pattern, starts[0] + 4, end)
            while at >= 0:
                entry = at - 4  # nameOff is an inlinedCall's second field
                tree = bisect.bisect_right(starts, entry) - 1
                start = starts[tree]
                if (entry - start) % _INLINED_CALL_SIZE == 0 and entry < start + self._count(start, functions) * _INLINED_CALL_SIZE:
                    return True
                at = self._blob.find(pattern, at + 1, end)
        return False

    def _words(self, starts: list[int], end: int) -> frozenset[int] | None:
        """Every 4-byte word of the trees' region, to rule a name out without a search; None when a tree is not
        4-byte aligned (then every name is searched for)."""
        if self._region_words is None:
            if any(start % 4 for start in starts):
                return None
            words = array.array("i", self._blob[starts[0] : end - (end - starts[0]) % 4])
            if (self._table.order == "<") != (sys.byteorder == "little"):
                words.byteswap()
            self._region_words = frozenset(words)
        return self._region_words

    def _count(self, start: int, functions: dict[int, list[int]]) -> int:
        """The length of the tree at `start` (a tree several functions share is as long as the longest says)."""
        if start not in self._counts:
            self._counts[start] = max(self._table.inline_tree_count(f) for f in functions[start])
        return self._counts[start]

    def _tree_starts(self) -> tuple[list[int], dict[int, list[int]]]:
        if self._trees is None:
            assert self._gofunc is not None
            functions: dict[int, list[int]] = {}
            for at, tree in self._table.inline_trees():
                functions.setdefault(self._gofunc + tree - self._base, []).append(at)
            self._trees = (sorted(functions), functions)
        return self._trees


@dataclass(frozen=True)
class _Pclntab:
    data: bytes
    order: str  # "<" or ">"
    pointer: int
    min_lc: int
    nfunc: int
    funcnametab: int  # offsets from the pclntab's start
    pctab: int
    pcln: int

    @classmethod
    def parse(cls, data: bytes, order: str) -> _Pclntab:
        if len(data) < 8 or struct.unpack_from(order + "I", data)[0] not in _PCLNTAB_MAGICS:
            raise ElfError("the .gopclntab header is not one of Go 1.18 or later")
        min_lc, pointer = data[6], data[7]
        if pointer not in (4, 8) or min_lc not in (1, 2, 4):
            raise ElfError(f"the .gopclntab header gives a pointer size of {pointer} and an instruction size of {min_lc}")
        words = struct.unpack_from(order + ("Q" if pointer == 8 else "I") * 8, data, 8)
        nfunc, funcnametab, pctab, pcln = words[0], words[3], words[6], words[7]
        if not (0 < funcnametab <= len(data) and 0 < pctab <= len(data) and 0 < pcln and pcln + 8 * (nfunc + 1) <= len(data)):
            raise ElfError("the .gopclntab header's offsets run past the section")
        return cls(data, order, pointer, min_lc, nfunc, funcnametab, pctab, pcln)

    @functools.cached_property
    def _funcs(self) -> tuple[int, ...]:
        """Each function's offset in the pclntab (its runtime._func)."""
        ftab = struct.unpack_from(f"{self.order}{2 * self.nfunc}I", self.data, self.pcln)
        funcs = tuple(self.pcln + funcoff for funcoff in ftab[1::2])
        if funcs and max(funcs) > len(self.data) - _FUNC_SIZE:
            raise ElfError("a function in .gopclntab lies past the section's end")
        return funcs

    def name(self, offset: int) -> str:
        start = self.funcnametab + offset
        end = self.data.find(b"\0", start)
        if offset < 0 or start >= len(self.data) or end < 0:
            raise ElfError("a function name offset runs past .gopclntab")
        return self.data[start:end].decode("utf-8", "replace")

    def linked_names(self) -> frozenset[str]:
        names, word = self._names_at, self.order + "i"
        return frozenset(
            names.get(offset) or self.name(offset) for offset in (struct.unpack_from(word, self.data, at + 4)[0] for at in self._funcs)
        )

    def all_names(self) -> frozenset[str]:
        """Every name in the name table: linked functions and the inlined ones their trees point at."""
        return frozenset(self._names_at.values())

    @functools.cached_property
    def _names_at(self) -> dict[int, str]:
        """Each name of the name table by its offset, as nameOff fields hold them: one pass over the table, rather
        than a search for each function's name."""
        # The cutab follows the name table (cuOffset is the header's next word).
        end = struct.unpack_from(self.order + ("Q" if self.pointer == 8 else "I"), self.data, 8 + 4 * self.pointer)[0]
        out: dict[int, str] = {}
        at = 0
        for raw in self.data[self.funcnametab : min(end, len(self.data))].split(b"\0"):
            if raw:
                out[at] = raw.decode("utf-8", "replace")
            at += len(raw) + 1
        return out

    def name_offsets(self, name: str) -> list[int]:
        """Where the name table holds `name` (what nameOff fields hold; a name can be there twice)."""
        end = struct.unpack_from(self.order + ("Q" if self.pointer == 8 else "I"), self.data, 8 + 4 * self.pointer)[0]
        end = min(end, len(self.data))
        wanted = name.encode() + b"\0"
        out: list[int] = []
        at = self.data.find(wanted, self.funcnametab, end)
        while at >= 0:
            if at == self.funcnametab or self.data[at - 1] == 0:  # a whole name, not the tail of a longer one
                out.append(at - self.funcnametab)
            at = self.data.find(wanted, at + 1, end)
        return out

    def inline_trees(self) -> Iterator[tuple[int, int]]:
        """(function, its inline tree's offset from gofunc) for each function that has an inline tree."""
        # Once per function of the binary (thousands), so the struct and the bytes are bound to locals.
        data, u32 = self.data, struct.Struct(self.order + "I").unpack_from
        index_at = _FUNC_SIZE + 4 * _PCDATA_INL_TREE_INDEX
        for at in self._funcs:
            if data[at + 43] <= _FUNCDATA_INL_TREE:  # nfuncdata
                continue
            npcdata = u32(data, at + 28)[0]
            if npcdata <= _PCDATA_INL_TREE_INDEX:
                continue
            tree = u32(data, at + _FUNC_SIZE + 4 * npcdata + 4 * _FUNCDATA_INL_TREE)[0]
            if tree != _NO_FUNCDATA and u32(data, at + index_at)[0]:
                yield at, tree

    def inline_tree_count(self, at: int) -> int:
        """How many entries the inline tree of the function at `at` has: the tree is not delimited, so one more than
        the largest index its PCDATA_InlTreeIndex pc-value table holds."""
        index_table = struct.unpack_from(self.order + "I", self.data, at + _FUNC_SIZE + 4 * _PCDATA_INL_TREE_INDEX)[0]
        return self._max_value(self.pctab + index_table) + 1

    def inlined_names(self, read: Callable[[int, int], bytes | None], gofunc: int) -> frozenset[str]:
        out: set[int] = set()
        entry_format = self.order + "4xi8x"  # an inlinedCall's nameOff
        for at, tree in self.inline_trees():
            count = self.inline_tree_count(at)
            if count <= 0:
                continue
            raw = read(gofunc + tree, count * _INLINED_CALL_SIZE)
            if raw is None:
                raise ElfError(f"an inline tree at {gofunc + tree:#x} lies outside the binary's sections")
            out.update(name for (name,) in struct.iter_unpack(entry_format, raw))
        return frozenset(self.name(offset) for offset in out)

    def _max_value(self, at: int) -> int:
        """The largest value of a pc-value table (runtime.step): zig-zag value deltas, then pc deltas, until a 0 delta.

        The common one-byte varints are read inline: a binary's tables are tens of thousands of them."""
        data, value, best, first = self.data, -1, -1, True
        try:
            while True:
                delta = data[at]
                if delta < 0x80:
                    at += 1
                else:
                    delta, at = _uvarint(data, at)
                if delta == 0 and not first:
                    return best
                first = False
                value += -((delta >> 1) + 1) if delta & 1 else delta >> 1
                if value > best:
                    best = value
                while data[at] >= 0x80:  # the pc delta: only its length matters
                    at += 1
                at += 1
        except IndexError:
            raise ElfError("a pc-value table runs past .gopclntab") from None


def _uvarint(data: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if at >= len(data) or shift > 63:
            raise ElfError("a varint runs past .gopclntab")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def _find_gofunc(stream: BinaryIO, sections: tuple[_Section, ...], pclntab: _Section, table: _Pclntab, order: str) -> int | None:
    """moduledata.gofunc: found from the pointer to the pclntab header that starts runtime.firstmoduledata."""
    word = order + ("Q" if table.pointer == 8 else "I")
    wanted = struct.pack(word, pclntab.address)
    follows = struct.pack(word, pclntab.address + table.funcnametab)  # funcnametab's data pointer
    span = _MODULEDATA_WORDS * table.pointer
    # The linker puts runtime.firstmoduledata in .noptrdata: looked at first, before megabytes of code are read.
    for section in sorted(sections, key=lambda s: s.name not in (".noptrdata", ".data")):
        if section.nobits or section is pclntab or section.address == 0 or section.size < span:
            continue
        data = _read_at(stream, section.offset, section.size)
        at = data.find(wanted)
        while at >= 0:
            if at % table.pointer == 0 and data[at + table.pointer : at + 2 * table.pointer] == follows and at + span <= len(data):
                words = struct.unpack_from(f"{order}{_MODULEDATA_WORDS}{word[1]}", data, at)
                if words[_EPCLNTAB_WORD] == pclntab.address + pclntab.size:
                    return words[_GOFUNC_WORD]
                gofunc, rodata = words[_OLD_GOFUNC_WORD], words[_OLD_RODATA_WORD]
                if rodata <= gofunc and any(s.address <= gofunc < s.address + s.size for s in sections if s.address):
                    return gofunc
            at = data.find(wanted, at + 1)
    return None


def _read_at(stream: BinaryIO, offset: int, size: int) -> bytes:
    try:
        stream.seek(offset)
        data = stream.read(size)
    except OSError as exc:
        raise ElfError(str(exc)) from None
    if len(data) != size:
        raise ElfError(f"a section at offset {offset} runs past the end of the file")
    return data


def _read_mapped(stream: BinaryIO, sections: tuple[_Section, ...], address: int, size: int) -> bytes | None:
    """`size` bytes at a virtual address, from the section that holds them; None when none does."""
    for s in sections:
        if not s.nobits and s.address and s.address <= address and address + size <= s.address + s.size:
            return _read_at(stream, s.offset + address - s.address, size)
    return None
