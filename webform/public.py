"""The public problem form: validate a report, turn it into a mail, and file it like mail.

A report becomes an RFC 5322 message From the reporter To the form's mailbox and goes
through the same intake as mail (`save_raw`, the durability point, then the pipeline),
so it gets the same ticket, acknowledgement and coordinator notice. Only after it is
saved does the page say "received"; the confirmation address reveals that one number.
"""
from __future__ import annotations

import hashlib
import json
import logging
import mimetypes
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from email import policy
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid
from pathlib import PurePosixPath

from flask import Blueprint, abort, current_app, redirect, render_template, request, session, url_for
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy.exc import OperationalError
from werkzeug.datastructures import FileStorage, MultiDict

from daemon.config import EMAIL_RE
from daemon.ingest.intake import save_raw
from daemon.pipeline import Pipeline
from daemon.store.models import RawMessage, Ticket
from daemon.outbound.outbox import header_text
from webform import helpdesk
from webform.auth import public
from webform.config import FormConfig
from webform.i18n import language, tr

log = logging.getLogger(__name__)
blueprint = Blueprint("public", __name__)

FIELDS = ("name", "email", "phone", "client", "location", "category", "subject", "description")
LIMITS = {"name": 200, "email": 254, "phone": 40, "client": 200, "location": 200,
          "category": 100, "subject": 200, "description": 20_000}
REQUIRED = ("name", "email", "client", "location", "category", "subject", "description")
OTHER_CLIENT = "other"
HONEYPOT = "website"  # hidden from people; bots fill in anything called "website"
# Line breaks in any form, and the other control characters: never part of a one-line field.
ONE_LINE_RE = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]+")
PHONE_RE = re.compile(r"^[0-9+()\-./ ]{3,40}$")
CONFIRMATION_SALT = "jantar-form-confirmation"
# Header values are built (and checked for line breaks) here, so they go out as given.
RAW_HEADERS = policy.SMTP.clone(refold_source="none")
CONFIRMATION_MAX_AGE = 7 * 24 * 3600
# How long the page waits for a record another thread is processing (the daemon's pipeline).
OUTCOME_WAIT = 5.0


@dataclass(frozen=True)
class Upload:
    filename: str
    content_type: str
    data: bytes


@dataclass
class Report:
    """One submission: cleaned values, the files, and what is wrong with them."""

    values: dict[str, str]
    uploads: list[Upload] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


# -- reading and checking ------------------------------------------------------------------
def clean_value(name: str, value: str) -> str:
    """A field as the form keeps it: one line (except the description), trimmed."""
    value = value.replace("\r\n", "\n").replace("\x00", "")
    if name != "description":
        value = ONE_LINE_RE.sub(" ", value)
    return value.strip()


def prefill(args: MultiDict, form: FormConfig, clients: list[str]) -> dict[str, str]:
    """Field values from query parameters (links the form-only mailbox sends), made safe."""
    values = {name: clean_value(name, args.get(name, ""))[:LIMITS[name]] for name in FIELDS}
    values["category"] = _category_key(values["category"], form) or ""
    if values["client"] not in (*clients, OTHER_CLIENT):
        values["client"] = next((c for c in clients if c.lower() == values["client"].lower()), "")
    return values


def _category_key(value: str, form: FormConfig) -> str | None:
    wanted = value.strip().lower()
    return next((c.key for c in form.categories
                 if wanted in (c.key.lower(), c.pl.lower(), c.en.lower())), None)


def read_report(data: MultiDict, files: list[FileStorage], form: FormConfig,
                clients: list[str]) -> Report:
    report = Report({name: clean_value(name, data.get(name, "")) for name in FIELDS})
    # An address with a line break is an injection attempt, not a typo to tidy up.
    report.values["email"] = data.get("email", "").strip()
    for name in FIELDS:
        problem = _field_problem(name, report.values[name], form, clients)
        if problem:
            report.errors[name] = problem
    report.uploads, problem = read_uploads(files, form)
    if problem:
        report.errors["attachments"] = problem
    return report


def _field_problem(name: str, value: str, form: FormConfig, clients: list[str]) -> str | None:
    if not value:
        return tr("To pole jest wymagane.", "This field is required.") if name in REQUIRED else None
    if len(value) > LIMITS[name]:
        return tr("Najwyżej {n} znaków.", "At most {n} characters.", n=LIMITS[name])
    if name == "email" and not valid_address(value):
        return tr("Podaj poprawny adres e-mail, np. jan.kowalski@example.pl.",
                  "Enter a valid email address, e.g. jan.smith@example.com.")
    if name == "phone" and not PHONE_RE.match(value):
        return tr("Podaj numer telefonu (cyfry, spacje, +, -).",
                  "Enter a phone number (digits, spaces, +, -).")
    if name == "client" and value not in (*clients, OTHER_CLIENT):
        return tr("Wybierz sieć z listy.", "Choose a network from the list.")
    if name == "category" and form.category(value) is None:
        return tr("Wybierz kategorię z listy.", "Choose a category from the list.")
    return None


def valid_address(address: str) -> bool:
    """A plain address the mail system can answer: ASCII before the @, no line breaks."""
    if not EMAIL_RE.match(address) or ONE_LINE_RE.search(address) \
            or not address.split("@")[0].isascii():
        return False
    try:
        Address(addr_spec=address)
    except (HeaderParseError, ValueError, IndexError):
        return False
    return True


def read_uploads(files: list[FileStorage], form: FormConfig) -> tuple[list[Upload], str | None]:
    """The chosen files within the form's count, size and type limits, or what is wrong."""
    chosen = [f for f in files if f and f.filename]
    if len(chosen) > form.max_attachments:
        return [], tr("Najwyżej {n} plików.", "At most {n} files.", n=form.max_attachments)
    uploads = []
    for storage in chosen:
        name = safe_filename(storage.filename)
        extension = PurePosixPath(name).suffix.lower().lstrip(".")
        if extension not in form.allowed_types:
            return [], tr("Plik {name}: niedozwolony typ. Dozwolone: {types}.",
                          "File {name}: type not allowed. Allowed: {types}.",
                          name=name, types=", ".join(form.allowed_types))
        data = storage.stream.read(form.max_attachment_bytes + 1)
        if len(data) > form.max_attachment_bytes:
            return [], tr("Plik {name} jest za duży (najwyżej {mb} MB).",
                          "File {name} is too large (at most {mb} MB).",
                          name=name, mb=_megabytes(form.max_attachment_bytes))
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        uploads.append(Upload(name, content_type, data))
    return uploads, None


def safe_filename(name: str) -> str:
    """The last path part, without control characters, at most 200 characters."""
    name = PurePosixPath(name.replace("\\", "/")).name
    name = ONE_LINE_RE.sub(" ", name).strip().strip(".") or "plik"
    stem, dot, extension = name.rpartition(".")
    return name[:200] if not dot else f"{stem[:190]}.{extension[:9]}"


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):g}"


# -- the mail -----------------------------------------------------------------------------------
def report_text(report: Report, form: FormConfig) -> str:
    """The body technicians read: the description first, then the reporter's details."""
    values = report.values
    category = form.category(values["category"])
    client = values["client"] if values["client"] != OTHER_CLIENT else "inna / other"
    lines = [values["description"], "", "-- ", "Zgłoszenie z formularza WWW",
             f"Imię i nazwisko: {values['name']}", f"E-mail: {values['email']}",
             f"Telefon: {values['phone'] or '-'}", f"Sieć: {client}",
             f"Sklep / lokalizacja: {values['location']}",
             f"Kategoria: {category.pl if category else values['category']}"]
    if report.uploads:
        lines.append("Załączniki: " + ", ".join(u.filename for u in report.uploads))
    return "\n".join(lines) + "\n"


def build_mail(report: Report, form: FormConfig, *, mailbox: str, now: datetime) -> bytes:
    """The report as the mail the pipeline expects (From the reporter, To the mailbox)."""
    name, email = report.values["name"], report.values["email"]
    plain_name = name.isascii() and "=?" not in name
    mail = EmailMessage(policy=RAW_HEADERS)
    mail.set_raw("From", formataddr((name, email)) if plain_name
                 else f"{header_text(name)} <{email}>")
    mail.set_raw("To", mailbox)
    mail.set_raw("Subject", header_text(report.values["subject"]))
    mail["Date"] = format_datetime(now)
    mail["Message-ID"] = make_msgid("web", domain=mailbox.rpartition("@")[2])
    mail.set_content(report_text(report, form))
    for upload in report.uploads:
        maintype, _, subtype = upload.content_type.partition("/")
        mail.add_attachment(upload.data, maintype=maintype, subtype=subtype,
                            filename=upload.filename)
    return mail.as_bytes()


def submission_key(report: Report) -> str:
    """The same report sent twice in one visit (a double click, a reload) is one record."""
    visit = session.get("csrf_token") or make_msgid()
    digest = hashlib.sha256(visit.encode())
    digest.update(json.dumps(report.values, sort_keys=True, ensure_ascii=False).encode())
    for upload in report.uploads:
        digest.update(upload.filename.encode() + hashlib.sha256(upload.data).digest())
    return "web:" + digest.hexdigest()


# -- filing ---------------------------------------------------------------------------------------
def form_mailbox() -> str:
    config = helpdesk().config
    return helpdesk().web.form.mailbox or config.mailboxes[0].address


def file_report(report: Report, origin: str) -> tuple[int, str | None]:
    """Save the report (durability point), process it now; its raw id and ticket number."""
    desk = helpdesk()
    mailbox, now = form_mailbox(), desk.clock.now()
    envelope = {"form": {**report.values, "language": language(),
                         "attachments": [u.filename for u in report.uploads]}}
    raw = build_mail(report, desk.web.form, mailbox=mailbox, now=now)
    try:
        saved = save_raw(desk.store, channel="web", key=submission_key(report), raw=raw,
                         now=now, mailbox=mailbox, origin=origin, envelope=envelope)
    except Exception:  # not saved: the page says try again (503 for the store, webform.setup)
        desk.intake_refusals.record("web")
        raise
    try:
        if saved.created:
            Pipeline(desk.config, desk.store, desk.clock).process_one(saved.raw_id)
        return saved.raw_id, ticket_number(saved.raw_id)
    except OperationalError:
        # Saved, so not lost: the daemon's pipeline files it when the store is back.
        log.exception("raw record %s: saved from the web form, processing deferred", saved.raw_id)
        return saved.raw_id, None


def ticket_number(raw_id: int) -> str | None:
    """The ticket the record went to; waits briefly if another thread is still on it."""
    deadline = time.monotonic() + OUTCOME_WAIT
    while True:
        with helpdesk().store.transaction() as db:
            raw = db.get(RawMessage, raw_id)
            if raw.status != "pending":
                return db.get_one(Ticket, raw.ticket_id).number if raw.ticket_id else None
        if time.monotonic() > deadline:
            return None
        time.sleep(0.1)


# -- confirmation ---------------------------------------------------------------------------------
def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.secret_key, salt=CONFIRMATION_SALT)


def confirmation_url(number: str | None, reference: str | None) -> str:
    """An address that shows this number (or reference) and nothing else, for a week."""
    token = _serializer().dumps({"n": number} if number else {"r": reference} if reference else {})
    return url_for("public.submitted", token=token)


# -- views -----------------------------------------------------------------------------------------
def _clients() -> list[str]:
    return [c.name for c in helpdesk().config.clients]


def _render(values: dict[str, str], errors: dict[str, str], status: int = 200, notice: str = ""):
    settings = helpdesk().web.form
    page = render_template("form.html", values=values, errors=errors, clients=_clients(),
                           categories=settings.categories, form=settings, notice=notice,
                           max_mb=_megabytes(settings.max_attachment_bytes), honeypot=HONEYPOT,
                           other_client=OTHER_CLIENT)
    return page, status


@blueprint.route("/", methods=["GET"])
@public
def form():
    return _render(prefill(request.args, helpdesk().web.form, _clients()), {})


@blueprint.route("/", methods=["POST"])
@public
def submit():
    origin = request.remote_addr or ""
    if request.form.get(HONEYPOT):
        log.warning("web form from %s: honeypot filled, nothing stored", origin)
        return redirect(confirmation_url(None, None), code=303)
    report = read_report(request.form, request.files.getlist("attachments"), helpdesk().web.form,
                         _clients())
    if report.errors:
        return _render(report.values, report.errors, 422,
                       tr("Popraw zaznaczone pola.", "Please correct the marked fields."))
    limiter = helpdesk().form_rate
    keys = (("ip", origin), ("email", report.values["email"].lower()))
    if wait := limiter.retry_after(*keys):
        log.warning("<%s> web form from %s: rate limit, refused", report.values["email"], origin)
        page, status = _render(report.values, {}, 429, tr(
            "Wysłano już kilka zgłoszeń. Spróbuj ponownie za {minutes} min.",
            "Several reports were sent already. Try again in {minutes} min.",
            minutes=max(1, round(wait / 60))))
        return page, status, {"Retry-After": str(wait)}
    raw_id, number = file_report(report, origin)
    limiter.record(*keys)
    log.info("%s web form from %s (%s)", number or f"raw record {raw_id}", origin,
             report.values["email"])
    return redirect(confirmation_url(number, f"WEB-{raw_id}"), code=303)


@blueprint.route("/submitted/<token>")
@public
def submitted(token: str):
    try:
        shown = _serializer().loads(token, max_age=CONFIRMATION_MAX_AGE)
    except BadSignature:
        abort(404)
    return render_template("form_submitted.html", number=shown.get("n"),
                           reference=shown.get("r"))
