"""Who a call was with: the client and contact behind a number, the technician behind an extension.

Loaded once per import into plain dictionaries, so matching a million rows costs a
dictionary look-up each. Numbers come from the clients' configured `phones` and from
the phone field of web-form reports (whose address is then the contact). Technicians
are found by [calls].extensions, by address, by name or by the extension in a channel
name ("SIP/101-0000a1").
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from daemon.ingest.calls.config import CallSettings
from daemon.ingest.calls.numbers import extension_of, is_external, normalise_number
from daemon.store.models import Client, RawMessage, Technician, Ticket


@dataclass
class CallDirectory:
    client_by_phone: dict[str, int] = field(default_factory=dict)
    contact_by_phone: dict[str, tuple[str, int | None]] = field(default_factory=dict)
    technician_by_key: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, session: Session, settings: CallSettings) -> CallDirectory:
        directory = cls()
        directory._load_clients(session)
        directory._load_form_contacts(session)
        directory._load_technicians(session, settings)
        return directory

    def _load_clients(self, session: Session) -> None:
        for client_id, phones in session.execute(select(Client.id, Client.phones)
                                                 .where(Client.active)):
            for phone in phones or []:
                number = normalise_number(phone)
                if is_external(number):
                    self.client_by_phone[number] = client_id

    def _load_form_contacts(self, session: Session) -> None:
        """Phone numbers people gave on the web form; the latest report wins."""
        clients = dict(session.execute(select(Client.name, Client.id)).all())
        rows = session.execute(
            select(RawMessage.envelope, Ticket.client_id)
            .outerjoin(Ticket, Ticket.id == RawMessage.ticket_id)
            .where(RawMessage.channel == "web").order_by(RawMessage.id)
            .execution_options(yield_per=1000))
        for envelope, ticket_client in rows:
            form = (envelope or {}).get("form") or {}
            number = normalise_number(form.get("phone"))
            email = str(form.get("email") or "").strip().lower()
            if is_external(number) and email:
                self.contact_by_phone[number] = (email[:320],
                                                 ticket_client or clients.get(form.get("client")))

    def _load_technicians(self, session: Session, settings: CallSettings) -> None:
        by_email: dict[str, int] = {}
        for tech_id, email, name in session.execute(
                select(Technician.id, Technician.email, Technician.name).where(Technician.active)):
            by_email[email.lower()] = tech_id
            for key in (email.lower(), email.split("@")[0].lower(), (name or "").lower()):
                if key:
                    self.technician_by_key.setdefault(key, tech_id)
        for extension, email in settings.extensions.items():
            if email in by_email:
                self.technician_by_key[extension] = by_email[email]

    # -- questions ------------------------------------------------------------------------
    def client_and_contact(self, number: str | None) -> tuple[int | None, str | None]:
        if not is_external(number):
            return None, None
        contact, contact_client = self.contact_by_phone.get(number, (None, None))
        return self.client_by_phone.get(number) or contact_client, contact

    def technician(self, agent: str | None) -> int | None:
        """The technician the PBX's agent text names, or None."""
        if not agent:
            return None
        key = agent.strip().lower()
        found = self.technician_by_key.get(key)
        if found is None and extension_of(key):
            found = self.technician_by_key.get(extension_of(key))
        return found
