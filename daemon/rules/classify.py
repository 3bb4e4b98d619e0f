"""Decide whether a mail was written by a machine: auto-replies, bounces, lists, our own mail.

Such mail is still stored on its ticket, but it is never answered automatically
(RFC 3834). `automatic_reason` returns why, or None for mail a person wrote.
"""
from __future__ import annotations

import re

from daemon.config import Config
from daemon.parse import ParsedMail

# Every mail we send carries this header; seeing it again means a loop.
LOOP_HEADER = "X-Jantar-Helpdesk-Loop"

AUTO_SUBJECT_RE = re.compile(
    r"^\s*(automatyczna odpowied[zź]|odpowied[zź] automatyczna|out of (the )?office|"
    r"automatic reply|auto(matic)?[- ]?reply|autoreply|abwesenheitsnotiz|"
    r"nieobecno[sś][cć]|jestem nieobecn[ya]|r[ée]ponse automatique|vacation)",
    re.IGNORECASE)
BOUNCE_SUBJECT_RE = re.compile(
    r"(undeliver|undelivered mail|delivery (status )?notification|delivery fail|"
    r"mail delivery failed|returned mail|failure notice|delivery has failed|"
    r"niedostarczon|nie dostarczono|nie mo[zż]na dostarczy[cć]|zwrot wiadomo[sś]ci)",
    re.IGNORECASE)
NOREPLY_LOCAL_RE = re.compile(
    r"^(no[-_.]?reply|do[-_.]?not[-_.]?reply|mailer[-_.]daemon|postmaster|bounces?|"
    r"nie[-_.]?odpowiadaj)([-+_.].*)?$", re.IGNORECASE)


def _header(mail: ParsedMail, name: str) -> str:
    return (mail.headers.get(name) or "").strip().lower()


def is_bounce(mail: ParsedMail) -> bool:
    content_type = _header(mail, "content-type")
    if content_type.startswith("multipart/report"):
        return True
    local = mail.from_email.split("@", 1)[0]
    if local in ("mailer-daemon", "postmaster") and BOUNCE_SUBJECT_RE.search(mail.subject):
        return True
    null_sender = "return-path" in mail.headers and _header(mail, "return-path") in ("<>", "")
    return null_sender and bool(BOUNCE_SUBJECT_RE.search(mail.subject))


def automatic_reason(mail: ParsedMail, config: Config) -> str | None:
    """Why this mail must not be answered automatically, or None if a person wrote it."""
    if _header(mail, LOOP_HEADER.lower()):
        return "our loop header"
    if mail.from_email in config.own_addresses:
        return "sent from our own address"
    auto_submitted = _header(mail, "auto-submitted")
    if auto_submitted and auto_submitted.split(";")[0].strip() != "no":
        return f"Auto-Submitted: {auto_submitted}"
    if is_bounce(mail):
        return "bounce, delivery or read report"
    for name in ("x-autoreply", "x-autorespond", "x-auto-response-suppress"):
        if name in mail.headers:
            return f"{name} header"
    precedence = _header(mail, "precedence")
    if precedence in ("bulk", "list", "junk", "auto_reply"):
        return f"Precedence: {precedence}"
    if "list-id" in mail.headers:
        return "mailing list (List-Id)"
    if AUTO_SUBJECT_RE.search(mail.subject):
        return "auto-reply subject"
    if not mail.from_email or NOREPLY_LOCAL_RE.match(mail.from_email.split("@", 1)[0]):
        return "no-reply sender"
    return None
