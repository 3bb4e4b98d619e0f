"""Mirror the configured clients and technicians into the store, where tickets point at them."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from daemon.config import Config
from daemon.store.models import Client, Technician


def sync_directory(session: Session, config: Config) -> None:
    """Upsert clients by name and technicians by email; deactivate the ones removed.

    A technician row with a password and no entry in the configuration is a web account
    made by `helpdesk user add`, and is left alone: `helpdesk user disable` ends it.
    Removing someone from the configuration therefore does not end their web sign-in.
    """
    clients = {c.name: c for c in session.scalars(select(Client))}
    for entry in config.clients:
        row = clients.pop(entry.name, None) or Client(name=entry.name)
        row.domains, row.phones = list(entry.domains), list(entry.phones)
        row.contract, row.active = entry.contract, True
        session.add(row)
    for row in clients.values():
        row.active = False
    technicians = {t.email: t for t in session.scalars(select(Technician))}
    for entry in config.technicians:
        row = technicians.pop(entry.email, None) or Technician(email=entry.email)
        row.name, row.tier, row.role, row.active = entry.name, entry.tier, entry.role, True
        session.add(row)
    for row in technicians.values():
        if not row.password_hash:
            row.active = False
