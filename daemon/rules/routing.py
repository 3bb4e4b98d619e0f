"""Route a new ticket: the ordered [[rules]], the after-hours handover, then its SLA clocks.

`decide` is pure (what the mail and the configuration say in, a Routing out), so
`helpdesk rules explain` shows the very reasoning `route_new_ticket` applies, with no
store and without changing anything.

Rules run in order. Every condition a rule gives must hold (a list means any of its
values); then its actions apply and later rules see the result (a rule that sets the
client or contract changes what the next one's `client` and `in_hours` test). `stop`
ends the list. Without rules a ticket is L1, normal. L1's work that arrives outside the
contract's L1 hours (a ticket routed to L1 with no assignee) goes to the contract's
after-hours tier, when it has one; else it waits for L1.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from daemon.config import Config
from daemon.parse import ParsedMail
from daemon.rules.sla import ClockFacts, SlaTimes, refresh_clocks, sla_times
from daemon.rules.sla_config import Rule, SlaConfig, sla_config
from daemon.store.models import Client, Technician, Ticket
from daemon.tickets import domain_of, record_event

log = logging.getLogger(__name__)

DEFAULT_TIER = "L1"
DEFAULT_PRIORITY = "normal"


@dataclass(frozen=True)
class MailFacts:
    """What rules can test about a new ticket."""

    mailbox: str | None
    channel: str
    sender: str
    subject: str
    body: str
    category: str | None
    has_attachment: bool
    client: str | None


@dataclass(frozen=True)
class Directory:
    """Who is configured: client name -> contract, technician address -> tier."""

    client_contracts: dict[str, str]
    technician_tiers: dict[str, str]

    @classmethod
    def of(cls, config: Config) -> Directory:
        return cls({c.name: c.contract for c in config.clients},
                   {t.email: t.tier for t in config.technicians})


@dataclass(frozen=True)
class RuleOutcome:
    rule: str
    matched: bool
    why_not: tuple[str, ...] = ()   # each condition that failed
    skipped: bool = False           # an earlier rule said stop


@dataclass
class Routing:
    tier: str = DEFAULT_TIER
    priority: str = DEFAULT_PRIORITY
    category: str | None = None
    client: str | None = None
    assignee: str | None = None
    contract: str = "standard"
    contract_chosen: bool = False   # a rule set the contract: a later client does not
    in_hours: bool = True           # arrived inside the contract's L1 hours
    handover: bool = False          # sent to the after-hours tier
    outcomes: list[RuleOutcome] = field(default_factory=list)

    @property
    def matched(self) -> list[str]:
        return [o.rule for o in self.outcomes if o.matched]


# -- pure --------------------------------------------------------------------------------
def decide(sla: SlaConfig, facts: MailFacts, directory: Directory, now: datetime) -> Routing:
    routing = Routing(category=facts.category, client=facts.client,
                      contract=_client_contract(sla, directory, facts.client))
    stopped = False
    for rule in sla.rules:
        if stopped:
            routing.outcomes.append(RuleOutcome(rule.name, False, skipped=True))
            continue
        failures = why_not(rule, facts, routing, sla, now)
        routing.outcomes.append(RuleOutcome(rule.name, not failures, tuple(failures)))
        if not failures:
            _apply(rule, routing, sla, directory)
            stopped = rule.stop
    _finish(routing, sla, directory, now)
    return routing


def _client_contract(sla: SlaConfig, directory: Directory, client: str | None) -> str:
    return directory.client_contracts.get(client or "") or sla.default_contract


def in_l1_hours(sla: SlaConfig, contract: str, now: datetime) -> bool:
    return sla.calendar(sla.contract(contract).calendar).is_open(now)


def why_not(rule: Rule, facts: MailFacts, routing: Routing, sla: SlaConfig,
            now: datetime) -> list[str]:
    """Each of RULE's conditions that does not hold, said the way an operator reads it."""
    failures = []

    def one_of(key: str, wanted: tuple[str, ...], actual: str | None, lower: bool = False):
        value = (actual or "").lower() if lower else (actual or "")
        if wanted and value not in wanted:
            failures.append(f"{key}: {actual or '(none)'!r} is not {' or '.join(map(repr, wanted))}")

    one_of("mailbox", rule.mailbox, facts.mailbox, lower=True)
    one_of("channel", rule.channel, facts.channel, lower=True)
    one_of("client", rule.client, routing.client)
    if rule.sender and not any(sender_matches(facts.sender, s) for s in rule.sender):
        failures.append(f"sender: {facts.sender!r} is not {' or '.join(map(repr, rule.sender))}")
    for key, pattern, text in (("subject", rule.subject, facts.subject),
                               ("body", rule.body, facts.body)):
        if pattern is not None and not pattern.search(text or ""):
            failures.append(f"{key}: /{pattern.pattern}/ not found")
    one_of("category", rule.category, routing.category)
    if rule.has_attachment is not None and rule.has_attachment != facts.has_attachment:
        failures.append("has_attachment: the mail has " + ("attachments" if facts.has_attachment
                                                          else "no attachment"))
    if rule.in_hours is not None:
        inside = in_l1_hours(sla, routing.contract, now)
        if inside != rule.in_hours:
            failures.append(f"in_hours: arrived {'inside' if inside else 'outside'} the L1 hours "
                            f"of contract {routing.contract!r}")
    return failures


def sender_matches(sender: str, wanted: str) -> bool:
    sender = sender.lower()
    if wanted.startswith("@"):
        domain = domain_of(sender)
        return domain == wanted[1:] or domain.endswith("." + wanted[1:])
    return sender == wanted


def _apply(rule: Rule, routing: Routing, sla: SlaConfig, directory: Directory) -> None:
    if rule.tier:
        routing.tier = rule.tier
    if rule.priority:
        routing.priority = rule.priority
    if rule.set_category:
        routing.category = rule.set_category
    if rule.set_client:
        routing.client = rule.set_client
        if not routing.contract_chosen:
            routing.contract = _client_contract(sla, directory, rule.set_client)
    if rule.contract:
        routing.contract, routing.contract_chosen = rule.contract, True
    if rule.assignee:
        routing.assignee = rule.assignee


def _finish(routing: Routing, sla: SlaConfig, directory: Directory, now: datetime) -> None:
    """The assignee's tier, then the after-hours handover."""
    if routing.assignee:
        routing.tier = directory.technician_tiers.get(routing.assignee, routing.tier)
    contract = sla.contract(routing.contract)
    routing.in_hours = in_l1_hours(sla, contract.name, now)
    l1_work = routing.tier == DEFAULT_TIER and not routing.assignee
    if l1_work and not routing.in_hours and contract.after_hours_tier:
        routing.tier, routing.handover = contract.after_hours_tier, True


def due_times(sla: SlaConfig, routing: Routing, arrived: datetime) -> SlaTimes:
    """The due times a ticket routed so would get, arriving at ARRIVED."""
    return sla_times(sla, ClockFacts(created_at=arrived, contract=sla.contract(routing.contract),
                                     priority=routing.priority, tier=routing.tier))


def mail_facts(mail: ParsedMail | None, *, mailbox: str | None, channel: str,
               client: str | None, category: str | None = None, sender: str = "",
               subject: str = "") -> MailFacts:
    return MailFacts(
        mailbox=mailbox, channel=channel, client=client, category=category,
        sender=(mail.from_email if mail else sender) or sender,
        subject=(mail.subject if mail else subject) or subject,
        body=mail.text if mail else "",
        # Inline parts are mostly signature logos: they do not make a mail "with attachment".
        has_attachment=bool(mail and any(not a.inline for a in mail.attachments)))


# -- on the ticket -----------------------------------------------------------------------
def route_new_ticket(session: Session, config: Config, ticket: Ticket, mail: ParsedMail | None,
                     now: datetime) -> Routing:
    """Apply the rules to a ticket just opened, start its clocks, record a `routed` event.

    An assignee set by a rule is notified by the caller (the pipeline's converse step
    mails every new ticket's assignee, with the first message's files).
    """
    sla = sla_config(config)
    facts = mail_facts(mail, mailbox=ticket.mailbox, channel=ticket.channel,
                       client=ticket.client.name if ticket.client else None,
                       category=ticket.category, sender=ticket.requester_email,
                       subject=ticket.subject)
    routing = decide(sla, facts, Directory.of(config), now)
    _apply_to_ticket(session, ticket, routing, now)
    refresh_clocks(session, config, ticket, now)
    record_event(session, ticket, "routed", now, tier=ticket.tier, priority=ticket.priority,
                 contract=ticket.contract, rules=routing.matched, handover=routing.handover,
                 calendar=ticket.sla_calendar)
    return routing


def _apply_to_ticket(session: Session, ticket: Ticket, routing: Routing, now: datetime) -> None:
    ticket.tier, ticket.priority, ticket.category = routing.tier, routing.priority, routing.category
    ticket.contract = routing.contract
    if routing.client and (ticket.client is None or ticket.client.name != routing.client):
        ticket.client = session.scalar(select(Client).where(Client.name == routing.client))
    if routing.assignee:
        _assign(session, ticket, routing.assignee, now)


def _assign(session: Session, ticket: Ticket, email: str, now: datetime) -> None:
    technician = session.scalar(select(Technician).where(Technician.email == email,
                                                         Technician.active))
    if technician is None:
        log.warning("%s: rule assignee %s is not an active technician", ticket.number, email)
        return
    ticket.assignee = technician
    if ticket.status == "new":
        ticket.status = "open"
    record_event(session, ticket, "assigned", now, actor="rules", assignee=technician.email,
                 tier=ticket.tier)
