"""The ``anxin tokens`` command line: create principals, issue, list and revoke tokens."""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Sequence
from datetime import datetime

from core.errors import AnxinError
from devices.access.rules import (
    DEFAULT_TOKEN_DAYS,
    Role,
)
from devices.access.store import (
    create_principal,
    issue_token,
    list_tokens,
    revoke_token,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anxin tokens", description="API principals and tokens.")
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="create a principal and print its token once")
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.add_argument("--name", required=True, help="who the token is for (a role, a desk)")
    create.add_argument("--days", type=int, default=DEFAULT_TOKEN_DAYS, help="lifetime in days")
    create.add_argument(
        "--member",
        action="append",
        default=[],
        type=uuid.UUID,
        help="doctor team member id (doctor; repeatable)",
    )
    create.add_argument(
        "--resident",
        action="append",
        default=[],
        type=uuid.UUID,
        help="resident id of a relative (family; repeatable)",
    )
    sub.add_parser("list", help="list tokens (never the tokens themselves)")
    revoke = sub.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("token_id", type=uuid.UUID)
    return parser


def main_tokens(argv: Sequence[str] | None = None) -> int:
    """``anxin tokens create|list|revoke``: returns the exit status."""
    from core import db  # noqa: PLC0415 - the command imports what it uses
    from core.settings import load_settings  # noqa: PLC0415

    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
        with db.connect(settings.db.url, autocommit=True) as conn:
            if args.command == "create":
                pid = create_principal(
                    conn,
                    args.name,
                    Role(args.role),
                    member_ids=args.member,
                    resident_ids=args.resident,
                )
                issued = issue_token(conn, pid, days=args.days)
                print(f"principal {pid} ({args.role}) {args.name}")
                print(f"token id  {issued.token_id}, expires {issued.expires_at.isoformat()}")
                print(f"token     {issued.token}")
                print("The token is shown once; only its hash is stored.", file=sys.stderr)
            elif args.command == "list":
                for t in list_tokens(conn):
                    state = (
                        "revoked"
                        if t.revoked_at
                        else (
                            "expired"
                            if t.expires_at <= datetime.now(t.expires_at.tzinfo)
                            else "live"
                        )
                    )
                    used = t.last_used_at.isoformat() if t.last_used_at else "never"
                    print(
                        f"{t.id}  {t.role:<10} {state:<7} expires {t.expires_at.isoformat()}"
                        f"  used {used}  {t.principal_name}"
                    )
            elif not revoke_token(conn, args.token_id):
                print(f"no live token {args.token_id}", file=sys.stderr)
                return 1
            else:
                print(f"revoked {args.token_id}")
    except AnxinError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
