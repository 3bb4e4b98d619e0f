"""`helpdesk backup`, `restore` and `forget`: the commands that keep data safe."""
from __future__ import annotations

from pathlib import Path

from daemon.cli import CommandError, _check_data_dirs, _open_store, _print_json


def add_ops_parser(commands) -> None:
    backup = commands.add_parser("backup", help="a consistent copy of the SQLite store (and the "
                                                "web's secret key) into the folder PATH, live")
    backup.add_argument("path", metavar="PATH")
    backup.add_argument("--force", action="store_true", help="replace PATH if it exists")
    backup.set_defaults(func=cmd_backup)

    restore = commands.add_parser("restore", help="put a backup folder in place of the configured "
                                                  "SQLite store, then migrate it")
    restore.add_argument("path", metavar="PATH")
    restore.add_argument("--force", action="store_true",
                         help="replace a store that already holds tickets (stop the daemon first)")
    restore.set_defaults(func=cmd_restore)

    forget = commands.add_parser("forget", help="anonymise a contact's personal data on closed "
                                                "and resolved tickets (GDPR erasure)")
    forget.add_argument("email", metavar="EMAIL")
    forget.add_argument("--dry-run", action="store_true",
                        help="list what would be changed, change nothing")
    forget.add_argument("--json", action="store_true")
    forget.set_defaults(func=cmd_forget)


def cmd_backup(args, config) -> int:
    from daemon.backup import BackupError, backup
    try:
        report = backup(config, Path(args.path), args.clock.now(), force=args.force)
    except BackupError as exc:
        raise CommandError(str(exc)) from None
    counts = ", ".join(f"{n} {table}" for table, n in report.counts.items())
    print(f"backup written to {report.path} ({', '.join(report.files)}): {counts}")
    return 0


def cmd_restore(args, config) -> int:
    from daemon.backup import BackupError, restore
    _check_data_dirs(config)
    try:
        result = restore(config, Path(args.path), force=args.force)
    except BackupError as exc:
        raise CommandError(str(exc)) from None
    _open_store(config, migrate=True).dispose()  # an older backup comes up to the schema
    counts = ", ".join(f"{n} {table}" for table, n in result["counts"].items())
    print(f"restored the backup of {result['created_at']}: {counts}; "
          f"secret key: {result['secret_key']}")
    return 0


def cmd_forget(args, config) -> int:
    from daemon.forget import ForgetError, forget
    store = _open_store(config, migrate=False)
    try:
        report = forget(config, store, args.email, args.clock.now(), dry_run=args.dry_run)
    except ForgetError as exc:
        raise CommandError(str(exc)) from None
    if args.json:
        _print_json(report.as_dict())
        return 0
    verb = "would anonymise" if args.dry_run else "anonymised"
    for row in report.tickets:
        changed = ", ".join(f"{what} {n}" for what, n in sorted(row["changes"].items()))
        print(f"{row['ticket']:<12} {verb}: {changed or 'nothing left to change'}")
    for row in report.skipped:
        print(f"{row['ticket']:<12} skipped: {row['reason']}")
    print(f"calls: {report.calls} {verb}")
    if not report.tickets and not report.skipped and not report.calls:
        print("nothing stored for this address")
    return 0
