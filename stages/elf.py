"""ELF facts through pyelftools, typed where pyelftools is not.

pyelftools sets a dynamic tag's string (`tag.needed`, `tag.rpath`, ...) with
setattr at run time, so its types cannot name it; `tag_string` reads it once,
checked, for every stage that reads ELF.
"""

from __future__ import annotations

from elftools.elf.dynamic import DynamicTag

# The tags whose value pyelftools resolves through the dynamic string table.
STRING_TAGS = frozenset({"DT_NEEDED", "DT_RPATH", "DT_RUNPATH", "DT_SONAME"})


def tag_string(tag: DynamicTag) -> str:
    """The string a DT_NEEDED, DT_RPATH, DT_RUNPATH or DT_SONAME tag names."""
    kind = tag.entry.d_tag
    if kind not in STRING_TAGS:
        raise ValueError(f"{kind} names no string")
    value = getattr(tag, kind[3:].lower())
    if not isinstance(value, str):
        raise ValueError(f"{kind} is not a string")
    return value
