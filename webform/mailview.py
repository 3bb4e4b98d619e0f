"""A stored mail's HTML made fit to show: isolated, with remote images held back until asked.

The HTML was sanitised when the mail was parsed; it is sanitised again here with the
same policy (rows written by an older parser get today's rules) and then shown only
inside `<iframe sandbox="" srcdoc="...">`: no script runs there, it has no origin of its
own, it cannot navigate the page or open windows. A Content-Security-Policy inside the
document repeats that, so a remote image loads only after "show images" (?images=1), and
the mail's own inline images (cid:) are embedded from the attachments as data: URLs.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass
from html import escape

from sqlalchemy.orm import Session

from daemon.parse import safe_html
from daemon.store.models import Blob, Message

INLINE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
INLINE_MAX_BYTES = 3 * 1024 * 1024   # larger inline pictures stay downloadable attachments
REMOTE = ("http://", "https://", "//")

DOCUMENT = """<!doctype html><html><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="referrer" content="no-referrer">
<style>
body {{ font: 15px/1.45 system-ui, sans-serif; color: #1d232b; margin: .5rem; overflow-wrap: anywhere; }}
img {{ max-width: 100%; height: auto; }}
img:not([src]) {{ display: inline-block; min-width: 2rem; min-height: 1rem; outline: 1px dashed #9aa4b1; }}
a[href]::after {{ content: " <" attr(href) ">"; color: #5d6773; font-size: .85em; }}
table {{ max-width: 100%; }} pre {{ white-space: pre-wrap; }}
</style></head><body>{body}</body></html>"""


@dataclass
class MailHtml:
    srcdoc: str            # the whole document, for the iframe's srcdoc attribute
    blocked_images: int    # remote images held back (a "show images" link when > 0)


def _inline_images(session: Session, message: Message) -> dict[str, str]:
    """cid -> data: URL for the message's small inline pictures."""
    found = {}
    for attachment in message.attachments:
        if not (attachment.content_id and attachment.blob_sha256
                and attachment.content_type in INLINE_TYPES
                and attachment.size <= INLINE_MAX_BYTES):
            continue
        blob = session.get(Blob, attachment.blob_sha256)
        if blob is not None:
            encoded = base64.b64encode(blob.data).decode("ascii")
            found[attachment.content_id] = f"data:{attachment.content_type};base64,{encoded}"
    return found


def mail_html(session: Session, message: Message, *, show_images: bool) -> MailHtml | None:
    """MESSAGE's HTML as a sandboxed document, or None when it has no HTML part."""
    if not message.html:
        return None
    inline = _inline_images(session, message)
    blocked = 0

    def image_source(tag: str, attribute: str, value: str) -> str | None:
        nonlocal blocked
        if tag != "img" or attribute != "src":
            return value
        if value.lower().startswith("cid:"):
            return inline.get(value[4:].strip("<>"))
        if value.lower().startswith(REMOTE):
            if show_images:
                return "https:" + value if value.startswith("//") else value
            blocked += 1
        return None  # relative or unknown: nothing of ours to load

    body = safe_html(message.html, attribute_filter=image_source)
    images = "data: http: https:" if show_images else "data:"
    csp = f"default-src 'none'; img-src {images}; style-src 'unsafe-inline'; form-action 'none'"
    return MailHtml(DOCUMENT.format(csp=escape(csp), body=body), blocked)
