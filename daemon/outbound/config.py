"""Read the [outbound] section into an OutboundConfig: how and how persistently mail leaves."""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from daemon.config import Config, ConfigError, _Reader, _secret, derived, parse_duration

TRANSPORTS = ("maildir", "smtp")
TLS_MODES = ("none", "starttls", "tls")
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
# The port says which TLS a relay speaks unless the operator says otherwise (RFC 8314).
TLS_BY_PORT = {465: "tls", 587: "starttls"}


@dataclass(frozen=True)
class OutboundConfig:
    transport: str = "maildir"
    maildir: Path = Path("var/sent")
    smtp_host: str = "localhost"
    smtp_port: int = 25
    smtp_tls: str = "none"
    smtp_user: str | None = None
    smtp_password: str | None = None
    from_name: str = "Jantar Helpdesk"
    retry_for: timedelta = timedelta(days=2)
    backoff_initial: timedelta = timedelta(minutes=1)
    backoff_max: timedelta = timedelta(hours=1)
    timeout: timedelta = timedelta(seconds=30)
    auto_reply_limit_per_hour: int = 5
    templates_dir: Path | None = None

    @property
    def lease(self) -> timedelta:
        """How long a claimed mail is left alone by other senders.

        Longer than any one SMTP conversation can take (each step may wait `timeout`),
        so a slow send is not picked up twice; short enough that a crash mid-send is
        retried soon.
        """
        return max(timedelta(minutes=5), self.timeout * 10)


def outbound_config(config: Config, env: dict[str, str] | None = None) -> OutboundConfig:
    """config.extra["outbound"] as an OutboundConfig; raises ConfigError naming each bad key.

    Read from the process environment (env=None), it is kept per Config
    (daemon.config.derived) and per value of the password variable it names.
    """
    if env is not None:
        return _checked(config, env)
    variable = config.extra.get("outbound", {}).get("smtp_password_env")
    password = os.environ.get(variable) if isinstance(variable, str) else None
    return derived(config, ("outbound", password), lambda: _checked(config, dict(os.environ)))


def _checked(config: Config, env: dict[str, str]) -> OutboundConfig:
    problems: list[str] = []
    outbound = _read(_Reader(config.extra.get("outbound", {}), "outbound", problems), config, env)
    if problems:
        raise ConfigError(problems)
    return outbound


def _read(r: _Reader, config: Config, env: dict[str, str]) -> OutboundConfig:
    port = r.get("smtp_port", int, OutboundConfig.smtp_port)
    templates_dir = r.get("templates_dir", str, None)
    outbound = OutboundConfig(
        transport=r.choice("transport", TRANSPORTS, OutboundConfig.transport),
        maildir=Path(r.get("maildir", str, str(config.data_dir / "sent"))),
        smtp_host=r.get("smtp_host", str, OutboundConfig.smtp_host),
        smtp_port=port,
        smtp_tls=r.choice("smtp_tls", TLS_MODES, TLS_BY_PORT.get(port, "none")),
        smtp_user=r.get("smtp_user", str, None),
        smtp_password=_secret(r, "smtp_password", env),
        from_name=r.get("from_name", str, OutboundConfig.from_name),
        retry_for=r.convert("retry_for", parse_duration, OutboundConfig.retry_for),
        backoff_initial=r.convert("backoff_initial", parse_duration,
                                  OutboundConfig.backoff_initial),
        backoff_max=r.convert("backoff_max", parse_duration, OutboundConfig.backoff_max),
        timeout=r.convert("timeout", parse_duration, OutboundConfig.timeout),
        auto_reply_limit_per_hour=r.get("auto_reply_limit_per_hour", int,
                                        OutboundConfig.auto_reply_limit_per_hour),
        templates_dir=Path(templates_dir) if templates_dir else None,
    )
    _check(r, outbound)
    r.finish()
    return outbound


def _check(r: _Reader, outbound: OutboundConfig) -> None:
    """Cross-key rules, each reported under the key the operator has to change."""
    if not 0 < outbound.smtp_port < 65536:
        r.fail("smtp_port", f"must be a port number, got {outbound.smtp_port}")
    for name in ("backoff_initial", "timeout", "retry_for"):
        if getattr(outbound, name) <= timedelta(0):
            r.fail(name, "must be longer than zero")
    if outbound.backoff_max < outbound.backoff_initial:
        r.fail("backoff_max", "must not be shorter than backoff_initial")
    if outbound.auto_reply_limit_per_hour < 0:
        r.fail("auto_reply_limit_per_hour", "must be 0 or more")
    if bool(outbound.smtp_user) != (outbound.smtp_password is not None):
        r.fail("smtp_user" if not outbound.smtp_user else "smtp_password",
               "smtp_user and smtp_password (or smtp_password_env) go together")
    # A password in clear text is only acceptable to a relay on this very machine.
    if outbound.smtp_user and outbound.smtp_tls == "none" and outbound.smtp_host not in LOCAL_HOSTS:
        r.fail("smtp_tls", f"is \"none\": the password would cross the network to "
                           f"{outbound.smtp_host} unencrypted; use \"starttls\" or \"tls\"")
    if outbound.templates_dir and not outbound.templates_dir.is_dir():
        r.fail("templates_dir", f"is not a folder: {str(outbound.templates_dir)!r}")
