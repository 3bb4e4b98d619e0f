"""Build raw test mails and push them through intake, as the adapters do.

Staff mail counts only with proof (daemon.rules.mail_auth): a technician's or
coordinator's test mail is written as a real one arrives, answering the mail the helpdesk
sent them (`technician_reply`), or vouched for by our receiving server (`MX_VERDICT`).
"""
from __future__ import annotations

import itertools
from datetime import datetime, timezone
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

from sqlalchemy import select

from daemon.clock import Clock
from daemon.ingest.intake import content_key, save_raw
from daemon.pipeline import Pipeline
from daemon.store.models import OutboxMail, Ticket

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


# What our receiving server writes above a mail whose DMARC check passed for jantar.pl;
# believed when the configuration has `[mail_auth] trusted_authserv_ids = ["mx.jantar.pl"]`.
TRUSTED_MX = "mx.jantar.pl"
MX_VERDICT = {"Authentication-Results": f"{TRUSTED_MX}; dkim=pass header.d=jantar.pl; "
                                        "dmarc=pass (p=reject) header.from=jantar.pl"}


def sent_to(store, number: str, address: str) -> OutboxMail:
    """The newest mail the helpdesk queued to ADDRESS about ticket NUMBER."""
    address = address.lower()
    with store.transaction() as session:
        ticket = session.scalar(select(Ticket).where(Ticket.number == number))
        if ticket is None:
            raise LookupError(f"no ticket {number}")
        mails = session.scalars(select(OutboxMail).where(OutboxMail.ticket_id == ticket.id)
                                .order_by(OutboxMail.id.desc())).all()
        for mail in mails:
            if address in (r.lower() for r in mail.recipients):
                session.expunge(mail)
                return mail
    raise LookupError(f"the helpdesk sent no mail to {address} about {number}: a real "
                      "technician answers mail they got")


def technician_reply(store, number: str, technician: str, body: str, **kwargs) -> bytes:
    """TECHNICIAN's reply to the newest mail the helpdesk sent them about ticket NUMBER,
    as their mail client writes it: Re: its subject, In-Reply-To and References its
    Message-ID. KWARGS go to make_mail (a display name in `sender`, attachments, ...)."""
    notice = sent_to(store, number, technician)
    kwargs.setdefault("sender", technician)
    kwargs.setdefault("subject", f"Re: {notice.subject}")
    return make_mail(body=body, in_reply_to=f"<{notice.message_id}>",
                     references=f"<{notice.message_id}>", **kwargs)
