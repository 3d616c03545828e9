"""Counted nouns for user-facing text ("1 block", "2 blocks", "1 switch", "3 switches"); top-level
so that every layer (capture's run messages, ui's views, the reports) counts the same way."""
from __future__ import annotations


def plural(word: str, n: int) -> str:
    """`word` for a count of n: singular for 1, else its plural ("switch" -> "switches")."""
    if n == 1:
        return word
    if word.endswith(("s", "sh", "ch", "x", "z")):
        return word + "es"
    return word + "s"


def count(n: int, word: str) -> str:
    """"1 block", "0 blocks", "1,234 frames"."""
    return f"{n:,} {plural(word, n)}"
