"""Small pieces of English shared by messages, so that a count and its noun agree everywhere."""

from __future__ import annotations


def plural(n: int, word: str, many: str = "") -> str:
    """``1 epoch``, ``2 epochs`` (``many`` for nouns whose plural is not ``word + "s"``)."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def article(word: str) -> str:
    """``a list``, ``an int``: the word after its indefinite article (by its first letter, which
    is right for the type names and words these messages use)."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"
