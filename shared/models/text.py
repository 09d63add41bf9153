"""Input hygiene for the text a request carries: what can be stored, what is drawn, what is refused.

Three rules, applied by :mod:`shared.models.parsing` before anything goes upstream:

- every string (and every parameter name) must be storable as UTF-8: JSON's ``\\ud800``
  escapes decode to unpaired surrogates, which upstream would bill for and the archive
  could not write into a record;
- free text (``prompt``, ``user``) must not hold control characters other than tab, line
  feed and carriage return: they are refused, not stripped, so what is billed and recorded
  is exactly what the caller sent (format characters such as ZWJ in emoji sequences or
  right-to-left marks are kept);
- a prompt needs at least one visible character: one made only of whitespace, controls,
  format characters (zero-width space, joiners, BOM) or other invisible code points
  (Hangul fillers, the blank braille pattern, variation selectors) is refused.
"""

from __future__ import annotations

import re
import unicodedata

from shared.errors import invalid

# C0 controls except tab, LF and CR; DEL; the C1 controls (U+0085 NEL included).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Letters, numbers, punctuation, symbols and private use are drawn; so are code points this
# Python's Unicode database does not know yet (Cn: an emoji newer than it), noncharacters aside ...
_VISIBLE_CATEGORIES = frozenset({"Lu", "Ll", "Lt", "Lm", "Lo", "Nd", "Nl", "No", "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So", "Co", "Cn"})
# ... except these, which render as nothing (Unicode's default-ignorable letters and the blank braille cell).
_INVISIBLE = frozenset("\u115f\u1160\u17b4\u17b5\u2800\u3164\uffa0")


def check_storable(name: str | None, text: str) -> None:
    """400 ``invalid_encoding`` naming ``name`` when ``text`` cannot be written as UTF-8 (an unpaired surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        what = f"{name} is" if name else "A parameter name is"
        raise invalid(
            name, f"{what} not valid Unicode text: unpaired surrogate U+{ord(text[exc.start]):04X} at position {exc.start}.", "invalid_encoding"
        ) from None


def check_free_text(name: str, text: str) -> None:
    """400 ``invalid_value`` naming ``name`` at the first control character other than tab, LF and CR."""
    found = _CONTROL.search(text)
    if found is not None:
        raise invalid(
            name,
            f"{name} contains the control character U+{ord(found.group()):04X} at position {found.start()}; "
            "only tab, line feed and carriage return are allowed.",
        )


def has_visible(text: str) -> bool:
    """True when at least one character of ``text`` is drawn (not whitespace, control, format or filler)."""
    return any(c not in _INVISIBLE and unicodedata.category(c) in _VISIBLE_CATEGORIES and not _noncharacter(c) for c in text)


def _noncharacter(char: str) -> bool:
    code = ord(char)
    return 0xFDD0 <= code <= 0xFDEF or code & 0xFFFE == 0xFFFE
