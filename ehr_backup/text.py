"""One rule for free text that users type (descriptions, labels, folder names): one visible line.

Control characters break the log and the page; format characters are invisible and change how the
text around them is shown: right-to-left overrides make `gpj.exe` look like `exe.jpg`, zero-width
characters make two different names look the same. Both are refused, not silently dropped, so what is
stored is what the user sees.
"""

from __future__ import annotations

import unicodedata

from .errors import InvalidInput

# Cc control, Cf format (bidirectional controls U+202A-U+202E, U+2066-U+2069, U+200E, U+200F, U+061C,
# zero-width characters, soft hyphen, BOM), Cs lone surrogates (JSON "\ud800"), Zl/Zp line and
# paragraph separators.
REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def is_hidden(char: str) -> bool:
    """Whether a character is a control, format (bidirectional, zero-width) or line-breaking one."""
    return unicodedata.category(char) in REFUSED_CATEGORIES


def hidden_characters(text: str) -> list[str]:
    """The refused characters in text, as U+XXXX codes (for a message that names them)."""
    return sorted({f"U+{ord(c):04X}" for c in text if is_hidden(c)})


def clean_text(text: str | None, limit: int, what: str) -> str:
    """Trim and bound a one-line text field; refuse control and invisible formatting characters."""
    text = (text or "").strip()
    if len(text) > limit:
        raise InvalidInput(f"{what} is longer than {limit} characters")
    found = hidden_characters(text)
    if found:
        raise InvalidInput(f"{what} must be a single line without control or invisible formatting "
                           f"characters (such as right-to-left marks); found {', '.join(found[:5])}")
    return text


def printable(text: str) -> str:
    """Text for a terminal: escaped (\\x1b, \\n …) when it holds anything that is not printable."""
    return text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text
