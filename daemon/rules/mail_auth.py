"""Decide whether a mail proves it was written by the staff member its From header names.

A From header is a claim anyone can write. A mail counts as a technician's or a
coordinator's (its commands run, its text is relayed to the customer) only with proof:

- it answers a mail the helpdesk sent to that very address and to nobody outside the
  staff: its In-Reply-To or References holds that mail's Message-ID. Our Message-IDs are
  128 random bits (`daemon.outbound.outbox.new_message_id`), seen only by the mail's
  recipients, so quoting one proves its writer reads that mailbox; or
- a receiving server of ours, named in `[mail_auth] trusted_authserv_ids`, says so in the
  topmost Authentication-Results headers (RFC 8601): `dmarc=pass` for the From domain, or
  `dkim=pass` with `header.d` aligned to it.

A From naming two addresses, or a requester read from another header than From, is never
a staff member's. The caller knows the address is a staff member's; this module only
weighs the proof, and reads the store for the one thing a mail cannot say about itself:
which of its references are mail we sent, and to whom.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import authres
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from daemon.config import Config
from daemon.parse import ParsedMail
from daemon.store.models import OutboxMail, Technician
from daemon.tickets import domain_of, read_rows

# A mail's references looked up at most: a real thread's References holds a few dozen.
MAX_REFERENCES = 100


@dataclass(frozen=True)
class StaffProof:
    """Whether a mail proved its staff sender; `how` says by what, or why not."""

    proven: bool
    how: str

    def __bool__(self) -> bool:
        return self.proven


def prove_staff(session: Session, config: Config, mail: ParsedMail) -> StaffProof:
    """Whether MAIL, whose From names a staff member, proves that member wrote it."""
    address = sole_sender(mail)
    if address is None:
        return StaffProof(False, _why_no_sole_sender(mail))
    if answers_staff_mail(session, config, address, referenced_ids(mail)):
        return StaffProof(True, "reply to our mail")
    verdict = trusted_verdict(mail.auth_results, config.mail_auth.trusted_authserv_ids,
                              domain_of(address))
    if verdict:
        return StaffProof(True, verdict)
    return StaffProof(False, "neither a reply to mail we sent to this address nor a "
                             "trusted DMARC/DKIM pass")


def sole_sender(mail: ParsedMail) -> str | None:
    """The one address MAIL is from, lower-cased; None when From names none or several, or
    the requester was read from Reply-To, Sender or Return-Path instead of From."""
    # `sender_source` comes with the parser's fallback to other headers; a ParsedMail
    # without it took its sender from From.
    if getattr(mail, "sender_source", "from") != "from":
        return None
    addresses = {a.strip().lower() for a in (mail.from_addresses or [mail.from_email])}
    addresses.discard("")
    if len(addresses) != 1 or (mail.from_email or "").lower() not in addresses:
        return None
    return addresses.pop()


def _why_no_sole_sender(mail: ParsedMail) -> str:
    if getattr(mail, "sender_source", "from") != "from":
        return f"sender taken from {mail.sender_source}, not From"
    return "From names no single address"


def referenced_ids(mail: ParsedMail) -> list[str]:
    """The Message-IDs MAIL answers or references, newest first, without repeats."""
    ids = dict.fromkeys(i.strip().strip("<>") for i in [*mail.in_reply_to,
                                                         *reversed(mail.references)])
    ids.pop("", None)
    return list(ids)[:MAX_REFERENCES]


# Built once, their lists bound at execution (see daemon/tickets.py `read_rows`).
_OUTBOX, _TECHNICIANS = OutboxMail.__table__, Technician.__table__
_SENT = select(_OUTBOX.c.recipients).where(
    _OUTBOX.c.message_id.in_(bindparam("ids", expanding=True)))
_STAFF = select(_TECHNICIANS.c.email).where(
    _TECHNICIANS.c.email.in_(bindparam("emails", expanding=True)), _TECHNICIANS.c.active)


def answers_staff_mail(session: Session, config: Config, address: str,
                       ids: list[str]) -> bool:
    """Whether one of IDS is a mail we sent to ADDRESS and to nobody outside the staff.

    A mail that also went to a customer gave the customer its Message-ID: a reply
    quoting it proves nothing about who wrote it.
    """
    if not ids:
        return False
    for recipients in read_rows(session, _SENT, {"ids": ids}, OutboxMail).scalars():
        recipients = {r.strip().lower() for r in recipients or ()}
        if address in recipients and _all_staff(session, config, recipients):
            return True
    return False


def _all_staff(session: Session, config: Config, recipients: set[str]) -> bool:
    others = recipients - config.own_addresses
    if not others:
        return True
    staff = set(read_rows(session, _STAFF, {"emails": sorted(others)}, Technician).scalars())
    return others <= staff


def trusted_verdict(headers: Iterable[str], trusted_ids: Iterable[str],
                    from_domain: str) -> str | None:
    """"dmarc" or "dkim" when a trusted server's verdict authenticates FROM_DOMAIN, else None.

    HEADERS are Authentication-Results values, topmost first. Only the contiguous run at
    the top written by a trusted server counts: our receiving server adds its header
    above every header already in the mail, so the first header with another id (or
    one that cannot be read, whose writer is unknown) and everything below it came from
    elsewhere, even a header below it that names our server. A pass contradicted within
    the run counts for nothing (a forged pass beneath our own fail, where the server did
    not strip incoming headers bearing its id): a DMARC fail voids every pass, a DKIM
    result other than pass voids the passes for its signing domain.
    """
    from_domain = from_domain.lower()
    results = [r for header in _top_run(headers, {i.lower() for i in trusted_ids})
               for r in header]
    dmarc = [r for r in results if r.method.lower() == "dmarc"]
    if any((r.result or "").lower() == "fail" for r in dmarc):
        return None
    if any(_passed(r) and _property(r, "header", "from").lower() == from_domain for r in dmarc):
        return "dmarc"
    dkim = [(_property(r, "header", "d").lower(), _passed(r)) for r in results
            if r.method.lower() == "dkim"]
    failed = {d for d, passed in dkim if not passed}
    if any(passed and d not in failed and aligned(d, from_domain) for d, passed in dkim):
        return "dkim"
    return None


def _top_run(headers: Iterable[str], trusted: set[str]) -> Iterator[list]:
    """The results of each header of the topmost run bearing a trusted authserv-id."""
    for value in headers:
        parsed = _parsed(value)
        if parsed is None or (parsed.authserv_id or "").lower() not in trusted:
            return
        yield parsed.results


def _parsed(value: str):
    """The header VALUE as authres reads it, or None: unreadable is no verdict."""
    try:
        return authres.AuthenticationResultsHeader.parse_value(value)
    except Exception:  # noqa: BLE001 - hostile text may trip any error of the parser
        return None


def _property(result, ptype: str, name: str) -> str:
    return next((str(p.value) for p in result.properties
                 if p.type.lower() == ptype and p.name.lower() == name), "")


def _passed(result) -> bool:
    return (result.result or "").lower() == "pass"


def aligned(signing_domain: str, from_domain: str) -> bool:
    """Relaxed alignment, simplified: the domains are equal, or one is a subdomain of the
    other and the shorter has at least two labels (never a bare top-level domain).

    DMARC's rule compares organisational domains, which needs the public suffix list;
    this rule never accepts more than it does except for a signer under a public suffix
    of two labels (`com.pl` signing for `x.com.pl`), and such a key is the registry's.
    """
    d, f = signing_domain.strip().strip(".").lower(), from_domain.strip().strip(".").lower()
    if not d or not f:
        return False
    if d == f:
        return True
    shorter, longer = sorted((d, f), key=len)
    return "." in shorter and longer.endswith("." + shorter)
