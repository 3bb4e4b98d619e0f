"""Turn raw mail bytes into a ParsedMail: decoded headers, text, safe HTML, attachments.

(Interface defined first; the implementation lives below.)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


class UnparseableMail(Exception):
    """The bytes cannot be read as a mail at all; the message is the quarantine reason."""


@dataclass
class ParsedAttachment:
    filename: str            # decoded, made safe: no path parts, no control characters
    content_type: str
    data: bytes
    content_id: str | None = None
    inline: bool = False


@dataclass
class ParsedMail:
    subject: str
    from_email: str          # lower-cased address, "" when absent
    from_name: str
    to: list[str]            # addresses, lower-cased
    cc: list[str]
    reply_to: list[str]
    message_id: str | None   # without angle brackets
    in_reply_to: list[str]   # Message-IDs, without angle brackets
    references: list[str]
    date: datetime | None    # aware
    text: str                # plain text: the text part, or derived from the HTML
    html: str | None         # sanitised with nh3, safe to show
    attachments: list[ParsedAttachment] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)  # lower-cased name -> decoded first value
    defects: list[str] = field(default_factory=list)
