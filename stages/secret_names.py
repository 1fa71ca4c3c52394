"""Names that look like credentials: one rule for the config's `env` and for audit's `secret-in-env`.

A name is credential-looking when one of its `_`-separated words (any case) is a credential word,
or two adjacent words make one (API_KEY, PRIVATE_KEY, ACCESS_KEY). Values are never looked at
or shown: only whether they are empty.
"""

from __future__ import annotations

WORDS = frozenset({"PASSWORD", "PASSWD", "SECRET", "TOKEN", "APIKEY", "CREDENTIAL", "CREDENTIALS"})
PAIRS = frozenset({("API", "KEY"), ("PRIVATE", "KEY"), ("ACCESS", "KEY")})


def credential_word(name: str) -> str | None:
    """The word that makes `name` look like a credential (e.g. "PASSWORD" for DB_PASSWORD), or None."""
    words = [w for w in name.upper().split("_") if w]
    for word in words:
        if word in WORDS:
            return word
    for first, second in zip(words, words[1:]):
        if (first, second) in PAIRS:
            return f"{first}_{second}"
    return None
