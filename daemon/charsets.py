"""Read a mail's bytes as text when their charset label is missing, unknown or wrong.

Everything a Polish mailbox receives comes through here: utf-8, iso-8859-2 and
windows-1250 (and each passed off as the other), undeclared 8-bit header bytes, and the
labels of the rest of the world. The mail itself is the evidence: the charsets it
declares (for its parts, in its encoded words) are the best guess for its undeclared
bytes, and a label its bytes do not fit is tried against the charsets it is commonly
confused with. No byte is dropped: what nothing reads becomes a visible U+FFFD, noted.
"""
from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache

# Labels seen in real mail that Python does not know, or knows as something narrower.
_CHARSET_ALIASES: dict[str, str | None] = {
    "unknown-8bit": None, "x-unknown": None, "unknown": None, "x-user-defined": None,
    "default": None, "iso-8859-8-i": "iso8859-8", "iso-8859-6-i": "iso8859-6",
    "x-mac-cyrillic": "mac-cyrillic", "x-mac-roman": "mac-roman", "x-sjis": "cp932",
    "x-euc-jp": "euc_jp", "x-gbk": "gb18030", "unicode-1-1-utf-7": "utf-7",
    "windows-31j": "cp932",
}
# What mail clients really mean by these labels (the WHATWG encoding table agrees).
_CODEC_SUPERSETS = {
    "iso8859-1": "cp1252", "gb2312": "gb18030", "gbk": "gb18030", "euc_kr": "cp949",
    "shift_jis": "cp932", "tis-620": "cp874",
}
# What bytes a label does not fit usually are: the charsets mail software confuses it
# with, likeliest first. ISO-2022-JP is 7-bit, so 8-bit bytes under it are EUC-JP
# (whose strict reading fails fast on Shift_JIS) or Shift_JIS; the rest are the
# Windows code pages that extend the ISO ones.
_JAPANESE_8BIT = ("euc_jp", "cp932")
_RELATIVES = {
    **{codec: _JAPANESE_8BIT for codec in ("iso2022_jp", "iso2022_jp_1", "iso2022_jp_2",
                                           "iso2022_jp_2004", "iso2022_jp_3", "iso2022_jp_ext")},
    "euc_jp": ("cp932",), "cp932": ("euc_jp",), "iso2022_kr": ("cp949",),
    "big5": ("big5hkscs", "cp950"), "cp1252": ("cp1250",), "iso8859-7": ("cp1253",),
    "iso8859-8": ("cp1255",), "iso8859-6": ("cp1256",),
}
# Text codecs that are not character sets: they would execute escapes or always fail.
_NOT_CHARSETS = {"undefined", "unicode-escape", "raw-unicode-escape", "punycode", "idna",
                 "mbcs", "oem", "charmap"}
# A declared charset in this family says little about undeclared 8-bit header bytes.
_WESTERN_CODECS = {"cp1252", "iso8859-15", "ascii"}
_POLISH_LETTERS = frozenset("ąćęłńóśźżĄĆĘŁŃÓŚŹŻ")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_C1_CONTROLS = re.compile(r"[\x80-\x9f]")


@lru_cache(maxsize=256)
def codec_name(charset: str) -> str | None:
    """Python's codec for a charset label, or None when unknown or not a character set."""
    label = charset.strip().strip("\"'").lower()
    label = _CHARSET_ALIASES.get(label, label)
    if not label:
        return None
    try:
        info = codecs.lookup(label)
    except (LookupError, ValueError, TypeError):
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_CHARSETS:
        return None
    return _CODEC_SUPERSETS.get(info.name, info.name)


def _is_ascii_compatible(codec: str) -> bool:
    return not codec.startswith(("utf-16", "utf-32", "utf-7"))


class MailCharsets:
    """One mail's evidence about its charsets, and how its bytes are read with it.

    DECLARED gives the charset labels the mail declares; it is called on first need
    only, because plain mails never need it. NOTE records what could not be read as
    labelled.
    """

    def __init__(self, declared: Callable[[], Iterable[str]] = tuple,
                 note: Callable[[str], None] = lambda text: None) -> None:
        self._declared = declared
        self._note = note
        self._codecs: list[str] | None = None

    def __iter__(self) -> Iterator[str]:
        """The codecs of the declared charsets, first declared first. A 7-bit one
        (ISO-2022) cannot have written 8-bit bytes: its relatives stand in for it."""
        if self._codecs is None:
            self._codecs = self._declared_codecs()
        return iter(self._codecs)

    def _declared_codecs(self) -> list[str]:
        found: list[str] = []
        for label in self._declared():
            codec = codec_name(label) if isinstance(label, str) else None
            if codec is None or codec in found or not _is_ascii_compatible(codec):
                continue
            stand_ins = _RELATIVES.get(codec, ()) if codec.startswith("iso2022") else ()
            found += [c for c in (codec, *stand_ins) if c not in found]
        return found

    def decode(self, data: bytes, charset: str | None) -> str:
        """Bytes in the charset their label names; a missing, unknown or lying label is
        guessed."""
        codec = codec_name(charset) if charset else None
        if codec is None or codec == "ascii":
            return self.decode_unlabelled(data)
        if codec != "utf-8" and _is_ascii_compatible(codec) and not data.isascii():
            # Mailers label utf-8 with their legacy default; valid utf-8 by accident is rare.
            text = _strict(data, "utf-8")
            if text is not None:
                return text
        text = _strict(data, codec)
        if text is None and codec == "utf-8":
            return self.decode_unlabelled(data)
        if text is None:
            return self._relabelled(data, charset, codec)
        return _c1_corrected(text, data, codec)

    def _relabelled(self, data: bytes, charset: str, codec: str) -> str:
        """Bytes their label does not fit: read in a relative of it, else with U+FFFD."""
        label = charset.strip()[:40]
        for relative in _RELATIVES.get(codec, ()):
            text = _strict(data, relative)
            if text is not None:
                self._note(f"charset {label!r} does not fit its bytes: read as {relative}")
                return text
        self._note(f"charset {label!r} does not fit its bytes: unreadable bytes shown as U+FFFD")
        return data.decode(codec, "replace")

    def decode_unlabelled(self, data: bytes) -> str:
        """Undeclared bytes: utf-8, else a charset the mail declares (one beyond the
        western ones first: latin-1 reads anything), else the likelier of windows-1250
        and iso-8859-2 (the two code pages of Polish mail)."""
        if data.isascii():
            return data.decode("ascii")
        text = _strict(data, "utf-8")
        if text is not None:
            return text
        text = _mostly_utf8(data)
        if text is not None:
            self._note("utf-8 with broken bytes: those shown as U+FFFD")
            return text
        western: str | None = None
        for codec in self:
            text = _strict(data, codec) if codec not in ("utf-8", "ascii") else None
            if text is None:
                continue
            if codec not in _WESTERN_CODECS:
                return _c1_corrected(text, data, codec)
            western = western or text
        candidates = [text for text in (western, _strict(data, "cp1250"),
                                        data.decode("iso8859-2")) if text is not None]
        return max(candidates, key=_central_european_score)  # first of equals wins


def _c1_corrected(text: str, data: bytes, codec: str) -> str:
    if codec == "iso8859-2" and _C1_CONTROLS.search(text):
        # ś, ź, Ś, Ź of windows-1250 are C1 controls in iso-8859-2: the label is wrong.
        return _strict(data, "cp1250") or text
    return text


def _strict(data: bytes, codec: str) -> str | None:
    try:
        return data.decode(codec)
    except (UnicodeError, LookupError):
        return None


def _mostly_utf8(data: bytes) -> str | None:
    """utf-8 with a few broken bytes (a name cut mid-character), or None when the bytes
    are another charset entirely."""
    text = data.decode("utf-8", "replace")
    broken = text.count("\ufffd")
    return text if broken * 2 <= len(_NON_ASCII.findall(text)) else None


def _central_european_score(text: str) -> int:
    """Higher when the decoding yields letters (Polish ones most) rather than symbols."""
    score = 0
    for char in _NON_ASCII.findall(text[:20000]):
        if char in _POLISH_LETTERS:
            score += 2
        elif char.isalpha():
            score += 1
        elif char <= "\x9f" or char == "\ufffd":
            score -= 3
        else:
            score -= 1
    return score
