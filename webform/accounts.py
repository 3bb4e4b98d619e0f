"""Web accounts of coordinators and technicians: passwords, sign-in checks, `helpdesk user`.

An account is a `Technician` row with a password hash (scrypt, via werkzeug). Technicians
named in the configuration get their row from it (daemon.directory); `helpdesk user add`
gives them a password, or creates a row for someone the configuration does not name.
A new password or a disabled account ends every web session of that account
(webform.sessions), in the same transaction.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from daemon.config import EMAIL_RE, ROLES, TIERS, Config
from daemon.store.models import Technician
from webform.sessions import DISABLED, PASSWORD, end_sessions

MIN_PASSWORD_LENGTH = 10
HASH_METHOD = "scrypt"  # werkzeug's scrypt:32768:8:1 with a 16-byte salt
# Checked when the address is unknown, so a wrong address costs the same time as a wrong
# password and sign-in answers do not tell which addresses have accounts.
_DECOY_HASH = generate_password_hash("decoy password, never valid", method=HASH_METHOD)


class AccountError(Exception):
    """A user-facing refusal (unknown address, weak password, conflict with configuration)."""


def hash_password(password: str) -> str:
    return generate_password_hash(password, method=HASH_METHOD)


def password_problem(password: str) -> str | None:
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"a password needs at least {MIN_PASSWORD_LENGTH} characters"
    if password != password.strip() or "\n" in password or "\r" in password:
        return "a password must not start or end with spaces or contain line breaks"
    return None


def authenticate(session: Session, email: str, password: str) -> Technician | None:
    """The active account with this address and password, else None (in constant-ish time)."""
    email = email.strip().lower()
    # An address with a control character names no account (and PostgreSQL refuses NUL).
    plausible = EMAIL_RE.match(email) and email.isprintable()
    technician = session.scalar(select(Technician).where(Technician.email == email)) \
        if plausible else None
    usable = technician is not None and technician.active and technician.password_hash
    stored = technician.password_hash if usable else _DECOY_HASH
    if check_password_hash(stored, password) and usable:
        return technician
    return None


def add_user(session: Session, config: Config, email: str, *, role: str, password: str,
             now: datetime, tier: str | None = None,
             name: str | None = None) -> tuple[Technician, bool]:
    """Give EMAIL a web account (created, or updated); returns the row and whether it is new.
    An account that had a password gets a new one: its sessions end.

    Role and tier of a technician the configuration names come from the configuration
    (it is mirrored on every start), so asking for different ones here is refused.
    """
    email = _valid_email(email)
    if role not in ROLES or (tier is not None and tier not in TIERS):
        raise AccountError(f"role must be one of {', '.join(ROLES)}; tier one of {', '.join(TIERS)}")
    _check_password(password)
    configured = config.technician(email)
    if configured is not None:
        if role != configured.role or (tier and tier != configured.tier):
            raise AccountError(f"{email} is in the configuration as {configured.role} "
                               f"({configured.tier}): change role and tier there")
        role, tier, name = configured.role, configured.tier, configured.name
    technician = session.scalar(select(Technician).where(Technician.email == email))
    created = technician is None
    if created:
        technician = Technician(email=email)
        session.add(technician)
    technician.name = name or technician.name or email.split("@")[0]
    technician.role, technician.tier = role, tier or technician.tier or "L1"
    if technician.password_hash:
        end_sessions(session, technician.id, PASSWORD, now)
    technician.active, technician.password_hash = True, hash_password(password)
    session.flush()
    return technician, created


def set_password(session: Session, email: str, password: str, *, now: datetime) -> Technician:
    """A new password for EMAIL; every session of the account ends."""
    _check_password(password)
    technician = session.scalar(select(Technician).where(Technician.email == _valid_email(email)))
    if technician is None or not technician.active:
        raise AccountError(f"no active account {email}: create it with `helpdesk user add`")
    technician.password_hash = hash_password(password)
    end_sessions(session, technician.id, PASSWORD, now)
    return technician


def disable_user(session: Session, config: Config, email: str, *, now: datetime) -> Technician:
    """Take web access away and end every session; a row the configuration does not name
    is deactivated too, as nothing else would."""
    technician = session.scalar(select(Technician).where(Technician.email == _valid_email(email)))
    if technician is None:
        raise AccountError(f"no account {email}")
    technician.password_hash = None
    end_sessions(session, technician.id, DISABLED, now)
    if config.technician(technician.email) is None:
        technician.active = False
    return technician


def _valid_email(email: str) -> str:
    email = email.strip().lower()
    if not EMAIL_RE.match(email):
        raise AccountError(f"not an email address: {email!r}")
    return email


def _check_password(password: str) -> None:
    problem = password_problem(password)
    if problem:
        raise AccountError(problem)
