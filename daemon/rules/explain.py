"""`helpdesk rules explain`: what routing would do with a mail, and why, changing nothing."""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from daemon.config import Config
from daemon.parse import ParsedMail
from daemon.rules.routing import Directory, decide, due_times, mail_facts
from daemon.rules.sla_config import sla_config
from daemon.tickets import configured_client


def mailbox_of(config: Config, mail: ParsedMail, wanted: str | None) -> str:
    """The given mailbox, else the first configured one the mail was addressed to."""
    if wanted:
        return wanted.lower()
    own = config.own_addresses
    return next((a for a in [*mail.to, *mail.cc] if a in own), config.mailboxes[0].address)


def explain_mail(config: Config, mail: ParsedMail, *, now: datetime, mailbox: str | None = None,
                 channel: str = "email", category: str | None = None) -> dict:
    """The rules' verdicts and the resulting routing and due times, as a plain dict."""
    sla = sla_config(config)
    tz, now = config.tz, now.replace(microsecond=0)
    facts = mail_facts(mail, mailbox=mailbox_of(config, mail, mailbox), channel=channel,
                       client=configured_client(config, mail.from_email), category=category)
    routing = decide(sla, facts, Directory.of(config), now)
    times = due_times(sla, routing, now)
    return {
        "mail": {"from": facts.sender, "subject": facts.subject, "mailbox": facts.mailbox,
                 "channel": facts.channel, "client": facts.client,
                 "has_attachment": facts.has_attachment, "arrived": _iso(now, tz)},
        "rules": [{"rule": o.rule, "matched": o.matched, "skipped": o.skipped,
                   "why_not": list(o.why_not)} for o in routing.outcomes],
        "result": {"tier": routing.tier, "priority": routing.priority,
                   "category": routing.category, "client": routing.client,
                   "assignee": routing.assignee, "contract": routing.contract,
                   "in_hours": routing.in_hours, "handover": routing.handover,
                   "calendar": times.calendar, "clock_starts": _iso(times.started_at, tz),
                   "first_response_due": _iso(times.first_response_due, tz),
                   "resolution_due": _iso(times.resolution_due, tz)},
    }


def format_explanation(explanation: dict) -> str:
    mail, result = explanation["mail"], explanation["result"]
    lines = [f"mail from {mail['from']} to {mail['mailbox']} ({mail['channel']}), "
             f"client {mail['client'] or '(unknown)'}",
             f"subject: {mail['subject']}",
             f"arrived: {mail['arrived']}", "", "rules:"]
    for outcome in explanation["rules"]:
        if outcome["skipped"]:
            lines.append(f"  -  {outcome['rule']}: not tried (an earlier rule stopped)")
        elif outcome["matched"]:
            lines.append(f"  +  {outcome['rule']}: matched")
        else:
            lines.append(f"  -  {outcome['rule']}: no match")
            lines += [f"       {reason}" for reason in outcome["why_not"]]
    if not explanation["rules"]:
        lines.append("  (no rules configured)")
    hours = "inside" if result["in_hours"] else "outside"
    lines += ["", "result:",
              f"  tier {result['tier']}, priority {result['priority']}, "
              f"category {result['category'] or '-'}, assignee {result['assignee'] or '-'}",
              f"  contract {result['contract']}: arrived {hours} L1 hours"
              + (", handed over to the after-hours tier" if result["handover"] else ""),
              f"  clock on calendar {result['calendar']}, starts {result['clock_starts']}",
              f"  first response due {result['first_response_due'] or '-'}",
              f"  resolution due     {result['resolution_due'] or '-'}"]
    return "\n".join(lines)


def _iso(moment: datetime | None, tz: ZoneInfo) -> str | None:
    return moment.astimezone(tz).isoformat() if moment else None
