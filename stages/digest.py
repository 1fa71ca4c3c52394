"""Content digests, parsed and validated once (`sha256:` plus 64 lowercase hex)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

_SHA256_HEX = re.compile(r"^[a-f0-9]{64}$")


@dataclass(frozen=True, order=True)
class Digest:
    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        algorithm, sep, hex_ = text.partition(":")
        if not sep or algorithm != "sha256" or not _SHA256_HEX.match(hex_):
            raise ValueError(f"'{text}' is not a sha256 digest (sha256: followed by 64 lowercase hex digits)")
        return cls(algorithm, hex_)

    @classmethod
    def of(cls, data: bytes) -> Digest:
        return cls("sha256", hashlib.sha256(data).hexdigest())

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"
