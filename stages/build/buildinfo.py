"""The build info Go embeds in every binary: toolchain, main module, dependency modules, build settings.

`go build` writes it into the `.go.buildinfo` section, and `-s -w` keeps it
(they drop the symbol table and DWARF, not data). Read here from the bytes,
the way Go's own debug/buildinfo and runtime/debug.ParseBuildInfo do, so an
image's binaries are described without running a Go toolchain, for any
architecture; tests/build/test_buildinfo.py holds the result to `go version -m -json`.
Only the format of Go 1.18 and later (strings inline after the header) is read.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from ..elf import ElfError, NotElfError, read_section

SECTION = ".go.buildinfo"
MAGIC = b"\xff Go buildinf:"
HEADER_SIZE = 32  # magic, pointer size, flags, padding: the strings start after it
ALIGN = 16
FLAG_INLINE_STRINGS = 0x2  # Go 1.18+: version and module info follow the header as varint-prefixed strings
# Module info is wrapped in 16 bytes of sentinel on each side so the linker can find it.
_SENTINEL = 16


class BuildInfoError(ValueError):
    """A Go binary whose build info cannot be read; the message says why."""


@dataclass(frozen=True)
class Module:
    """One module as the build info names it (runtime/debug.Module)."""

    path: str
    version: str
    sum: str = ""  # go.sum's h1: hash; empty for the main module and for directory replacements
    replace: Module | None = None  # what a `replace` directive put in its place


@dataclass(frozen=True)
class BuildInfo:
    go_version: str  # "go1.27.3"
    path: str  # the main package's import path
    main: Module
    deps: tuple[Module, ...]
    settings: tuple[tuple[str, str], ...]  # in the binary's order: -buildmode, -compiler, -tags, -trimpath, CGO_ENABLED, GOOS, GOARCH, ...

    def setting(self, key: str) -> str | None:
        return next((value for k, value in self.settings if k == key), None)


def read_build_info(data: bytes) -> BuildInfo | None:
    """The build info of an executable's bytes; None when it is not a Go binary (not ELF, or no build info section).

    Raises BuildInfoError when the section is there but cannot be read.
    """
    try:
        section = read_section(data, SECTION)
    except NotElfError:
        return None
    except ElfError as exc:
        raise BuildInfoError(f"unreadable ELF file ({exc})") from None
    if section is None:
        return None
    return _decode_section(section)


def _decode_section(data: bytes) -> BuildInfo:
    # The header sits at the first 16-byte-aligned occurrence of the magic, as debug/buildinfo searches.
    start = data.find(MAGIC)
    while start >= 0 and start % ALIGN:
        start = data.find(MAGIC, start + 1)
    if start < 0 or len(data) - start < HEADER_SIZE:
        raise BuildInfoError(f"no build info header in {SECTION}")
    data = data[start:]
    if not data[15] & FLAG_INLINE_STRINGS:
        raise BuildInfoError("build info in the format of Go before 1.18, which gosmall does not read")
    version, rest = _varint_string(data[HEADER_SIZE:])
    modinfo, _ = _varint_string(rest)
    if not version:
        raise BuildInfoError(f"{SECTION} names no Go version")
    if len(modinfo) >= 2 * _SENTINEL + 1 and modinfo[-_SENTINEL - 1] == ord("\n"):
        modinfo = modinfo[_SENTINEL:-_SENTINEL]
    else:
        modinfo = b""
    return parse_build_info(version.decode("utf-8", "replace"), modinfo.decode("utf-8", "replace"))


def _varint_string(data: bytes) -> tuple[bytes, bytes]:
    length, shift, used = 0, 0, 0
    for byte in data[:10]:
        used += 1
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    else:
        raise BuildInfoError(f"a truncated length in {SECTION}")
    if length > len(data) - used:
        raise BuildInfoError(f"a string in {SECTION} runs past its end")
    return data[used : used + length], data[used + length :]


def parse_build_info(go_version: str, text: str) -> BuildInfo:
    """The module info text (what `go version -m` prints), parsed as runtime/debug.ParseBuildInfo does."""
    path = ""
    main = Module("", "")
    deps: list[Module] = []
    settings: list[tuple[str, str]] = []
    last: str | None = None  # "main", or "dep" for deps[-1]: the module a `=>` line replaces
    for number, line in enumerate(text.split("\n")[:-1], start=1):
        try:
            if line.startswith("path\t"):
                path = line[5:]
            elif line.startswith("mod\t"):
                main, last = _module(line[4:].split("\t")), "main"
            elif line.startswith("dep\t"):
                deps.append(_module(line[4:].split("\t")))
                last = "dep"
            elif line.startswith("=>\t"):
                columns = line[3:].split("\t")
                if len(columns) != 3:
                    raise BuildInfoError(f"expected 3 columns for a replacement, got {len(columns)}")
                replacement = Module(columns[0], columns[1], columns[2])
                if last == "main":
                    main = Module(main.path, main.version, main.sum, replacement)
                elif last == "dep":
                    deps[-1] = Module(deps[-1].path, deps[-1].version, deps[-1].sum, replacement)
                else:
                    raise BuildInfoError("a replacement with no module on the line before")
                last = None
            elif line.startswith("build\t"):
                settings.append(_setting(line[6:]))
        except BuildInfoError as exc:
            raise BuildInfoError(f"Go build info line {number}: {exc}") from None
    return BuildInfo(go_version, path, main, tuple(deps), tuple(settings))


def _module(columns: list[str]) -> Module:
    if len(columns) not in (2, 3):
        raise BuildInfoError(f"expected 2 or 3 columns for a module, got {len(columns)}")
    return Module(columns[0], columns[1], columns[2] if len(columns) == 3 else "")


def _setting(text: str) -> tuple[str, str]:
    """`key=value`, either side Go-quoted when it holds spaces, quotes or `=` (keys only)."""
    if not text or text[0] == "=":
        raise BuildInfoError("a build setting with no key")
    if text[0] in '"`':
        raw_key = _quoted_prefix(text)
        if text[len(raw_key) : len(raw_key) + 1] != "=":
            raise BuildInfoError("a quoted build setting key not followed by '='")
        key, raw_value = _unquote(raw_key), text[len(raw_key) + 1 :]
    else:
        key, equals, raw_value = text.partition("=")
        if not equals:
            raise BuildInfoError("a build setting with no '='")
    value = _unquote(raw_value) if raw_value[:1] in ('"', "`") else raw_value
    return key, value


def _quoted_prefix(text: str) -> str:
    quote = text[0]
    i = 1
    while i < len(text):
        if text[i] == "\\" and quote == '"':
            i += 2
            continue
        if text[i] == quote:
            return text[: i + 1]
        i += 1
    raise BuildInfoError("an unterminated quoted string")


_DIGITS = {8: frozenset("01234567"), 16: frozenset("0123456789abcdefABCDEF")}
_ESCAPES = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92, "'": 39, '"': 34}


def _unquote(text: str) -> str:
    """Go's strconv.Unquote for the "..." and `...` forms strconv.Quote writes."""
    if len(text) < 2 or text[0] != text[-1] or text[0] not in '"`':
        raise BuildInfoError(f"a badly quoted string: {text[:40]!r}")
    body = text[1:-1]
    if text[0] == "`":
        return body
    out = bytearray()
    i = 0
    while i < len(body):
        char = body[i]
        if char != "\\":
            out += char.encode()
            i += 1
            continue
        kind = body[i + 1 : i + 2]
        if kind in _ESCAPES:
            out.append(_ESCAPES[kind])
            i += 2
        elif kind in ("x", "u", "U"):
            digits = {"x": 2, "u": 4, "U": 8}[kind]
            number = _number(body[i + 2 : i + 2 + digits], 16, digits)
            if number > 0x10FFFF:
                raise BuildInfoError(f"an escape beyond Unicode in a quoted string: {number:#x}")
            out += bytes([number]) if kind == "x" else chr(number).encode("utf-8", "surrogatepass")
            i += 2 + digits
        elif kind and kind in _DIGITS[8]:
            out.append(_number(body[i + 1 : i + 4], 8, 3) & 0xFF)
            i += 4
        else:
            raise BuildInfoError(f"an unknown escape \\{kind} in a quoted string")
    return out.decode("utf-8", "replace")


def _number(digits: str, base: int, count: int) -> int:
    if len(digits) != count or not set(digits) <= _DIGITS[base]:
        raise BuildInfoError(f"a bad escape {digits!r} in a quoted string")
    return int(digits, base)


def h1_hex(checksum: str) -> str:
    """go.sum's `h1:` as hex: base64 of a SHA-256 over the module's file list (Go's dirhash), which SPDX's checksum
    and in-toto's `dirHash` both take as hex; "" for anything else."""
    if not checksum.startswith("h1:"):
        return ""
    try:
        raw = base64.b64decode(checksum[3:], validate=True)
    except (binascii.Error, ValueError):
        return ""
    return raw.hex() if len(raw) == 32 else ""
