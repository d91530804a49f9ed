"""Which bytes of a frame may be a member whose key reads ``token`` (a regular expression:
the keys that cannot are skipped in C, never reaching Python); ``bridge.pipeline.tokens``
reads each candidate's key exactly."""

from __future__ import annotations

import re

TOKEN_KEY = b"token"
JUNK = rb"[\s\x80-\xff]*"  # blanks, and bytes that are not UTF-8 on their own
# A key that may read ``token``: its letters in order, each as is or escaped, junk (and any
# ``\\u`` escape) between them, at most 64 bytes; with the quote opening its value. Other
# keys never reach Python. A lookahead, so that every quote is tried (overlapping ones).
_ESC = rb"\\" + JUNK  # (junk after a backslash is read through: ``\\<0xff>u0065``)
_GAP = rb"(?:[\s\x80-\xff]|" + _ESC + rb"(?:[tnrf]|u(?:" + JUNK + rb"[0-9a-fA-F]){4}))*"


def _letter(char: int) -> bytes:
    """A letter as is, escaped (``\\k``), or as its ``\\u00XX`` escape (any hex case)."""
    digits = b"00%02x" % char
    hexes = JUNK.join(b"[%c%c]" % (d, d) if d < 0x61 else b"[%c%c]" % (d, d - 32) for d in digits)
    return b"(?:%c|%s(?:%c|u%s%s))" % (char, _ESC, char, JUNK, hexes)


_KEY = rb'"(?=[^"]{5,64}")(' + _GAP + _GAP.join(map(_letter, TOKEN_KEY)) + _GAP + rb')"'
MEMBER = re.compile(rb"(?=" + _KEY + JUNK + b":" + JUNK + b'("))', re.DOTALL)
