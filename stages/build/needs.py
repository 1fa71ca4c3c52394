"""What a Go binary needs at run time, read from the function names it links.

Go keeps every linked function's name in its pclntab, even with `-s -w` (which
drop only the symbol table and DWARF). A binary that can call
`time.LoadLocation` may read the zone database; one that links
`crypto/x509`'s system-root loader reads a CA bundle. Neither is a guess
from the source: it is what the linker kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..config import ImageConfig
from ..elf import ElfError, NoPclntabError, read_go_function_table
from ..errors import GosmallError

# The names that make each need; any one of them linked is enough.
NEED_FUNCTIONS: dict[str, tuple[str, ...]] = {
    "tzdata": ("time.LoadLocation",),
    "ca_certs": ("crypto/x509.loadSystemRoots", "crypto/x509.initSystemRoots"),
}


@dataclass(frozen=True)
class Needs:
    """Per need ("tzdata", "ca_certs"), the linked function names that make it."""

    evidence: tuple[tuple[str, tuple[str, ...]], ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(need for need, _ in self.evidence)

    def __contains__(self, need: object) -> bool:
        return need in self.names

    def to_json(self) -> list[dict[str, object]]:
        return [{"need": need, "because": list(functions)} for need, functions in self.evidence]

    @classmethod
    def from_json(cls, entries: Sequence[Mapping[str, Any]]) -> Needs:
        return cls(tuple((str(e["need"]), tuple(map(str, e["because"]))) for e in entries))


def read_needs(binary: Path) -> Needs:
    names = go_function_names(binary)
    evidence = []
    for need, functions in sorted(NEED_FUNCTIONS.items()):
        linked = tuple(f for f in functions if f in names)
        if linked:
            evidence.append((need, linked))
    return Needs(tuple(evidence))


def go_function_names(binary: Path) -> frozenset[str]:
    """Every function name in the binary's .gopclntab (linked or inlined), read by the one ELF reader."""
    try:
        with binary.open("rb") as stream:
            return read_go_function_table(stream).names
    except NoPclntabError:
        raise GosmallError(f"{binary} has no .gopclntab section; it is not a Go binary gosmall can read.") from None
    except (ElfError, OSError) as exc:
        raise GosmallError(f"{binary} cannot be read as an ELF file: {exc}.") from None


def advise(image: ImageConfig, needs: Needs, tzdata_bytes: int) -> tuple[tuple[str, str], ...]:
    """("warn" | "note", message) for a mismatch between what the binary links and what the image ships.

    A warning is for what a user would change: a zone the binary cannot load, bytes it can never read.
    """
    where = f"[tool.gosmall.images.{image.name}]"
    out: list[tuple[str, str]] = []
    ships_zones = image.tzdata in ("zip", "system")
    if "tzdata" in needs and not ships_zones and image.tzdata != "embed":
        out.append(
            (
                "warn",
                f"{where}: the binary links time.LoadLocation, but the image has no time zone database "
                f'(tzdata = "{image.tzdata}"), so every zone but UTC will fail to load at run time. Set tzdata = "zip" '
                '(Go\'s database, 400 KiB), tzdata = "embed" (compiled in), or list the zones it uses in zones = [...].',
            )
        )
    if "tzdata" not in needs and ships_zones:
        out.append(
            (
                "warn",
                f'{where}: the image ships a time zone database ({tzdata_bytes:,} bytes, tzdata = "{image.tzdata}"), '
                'but the binary never links time.LoadLocation, so it can never read it; tzdata = "none" saves those bytes.',
            )
        )
    if "ca_certs" in needs and not image.ca_certs and "ca_certs" not in image.written:
        # A note, not a warning: every net/http program links the loader, and most never dial TLS. Once
        # ca_certs is written down it is a decision, and nothing is said.
        out.append(
            (
                "note",
                f"{where}: the binary can load system CA roots (crypto/x509); set ca_certs = true if it makes TLS connections, "
                "ca_certs = false to say it does not.",
            )
        )
    return tuple(out)


def ship_what_is_needed(image: ImageConfig, needs: Needs) -> tuple[ImageConfig, str]:
    """With no config (`follow_needs`): Go's zone database only when time.LoadLocation is linked, the CA bundle
    only when crypto/x509's system-root loader is; and a line saying so."""
    evidence = dict(needs.evidence)
    shipped = replace(image, tzdata="zip" if "tzdata" in needs else "none", ca_certs="ca_certs" in needs)
    said = [f"Go's zone database (the binary links {', '.join(evidence['tzdata'])})" if "tzdata" in needs else "no zone database"]
    said.append(f"the CA bundle (it links {', '.join(evidence['ca_certs'])})" if "ca_certs" in needs else "no CA bundle")
    return shipped, f"no config: ships {' and '.join(said)}"
