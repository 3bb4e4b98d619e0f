"""Build raw test mails and push them through intake, as the adapters do."""
from __future__ import annotations

import itertools
from datetime import datetime, timezone
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

from daemon.clock import Clock
from daemon.ingest.intake import content_key, save_raw
from daemon.pipeline import Pipeline

_counter = itertools.count(1)


def make_mail(*, sender="jan.nowak@bursztyn.pl", to="sklep@jantar.pl", subject="Drukarka fiskalna nie drukuje",
              body="Dzień dobry,\ndrukarka w sklepie nr 12 nie drukuje paragonów.\n", message_id=None,
              in_reply_to=None, references=None, cc=None, headers=None, html=None,
              attachments=()) -> bytes:
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = to
    if cc:
        mail["Cc"] = cc
    mail["Subject"] = subject
    mail["Message-ID"] = message_id or make_msgid(idstring=str(next(_counter)), domain="test.example")
    mail["Date"] = format_datetime(datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc))
    if in_reply_to:
        mail["In-Reply-To"] = in_reply_to
    if references:
        mail["References"] = references
    for name, value in (headers or {}).items():
        mail[name] = value
    mail.set_content(body)
    if html:
        mail.add_alternative(html, subtype="html")
    for filename, content_type, data in attachments:
        maintype, subtype = content_type.split("/")
        mail.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return mail.as_bytes(policy=SMTP)  # CRLF, as on the wire


def deliver(store, config, raw: bytes, *, mailbox="sklep@jantar.pl", now=None, channel="smtp"):
    """Save RAW as an intake adapter would, then run the pipeline; returns the pipeline's counts."""
    clock = Clock(start=now) if now else Clock()
    save_raw(store, channel=channel, key=f"{channel}:{content_key(raw)}", raw=raw,
             now=clock.now(), mailbox=mailbox, origin="test")
    return Pipeline(config, store, clock).process_pending()
