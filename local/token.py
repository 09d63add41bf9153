"""``python3 dev.py token``: a bearer token from the running local stack's stand-in for Entra ID.

    python -m local.token --principal NAME [--roles Images.Caller[,Images.Operator]] [--url URL] [--lifetime S]

Asks the stack (``dev.py serve`` or ``run``, entra mode) for a token for a principal holding the app
roles given, prints it on stdout, for ``TOKEN=$(python3 dev.py token ...)``, and on stderr whom it
names: the principal, its object id (a name always maps to the same one), its client id, the roles.
It imports only what it needs (httpx and the stand-in's paths), not the stack, so the ``$(...)`` that
every local example starts with costs a fraction of a second.
"""

from __future__ import annotations

import argparse
import sys

import httpx

from local.easyauth import IDENTITY_PREFIX
from local.identity import LOCAL_TOKEN_PATH
from shared.callers.identity import CALLER_ROLE, OPERATOR_ROLE

DEFAULT_PORT = 7071  # as `func start`: where `dev.py serve` listens, and where this asks by default


def token(url: str, principal: str, roles: list[str], lifetime: int) -> int:
    """Print a token for ``principal`` holding ``roles`` from the stack at ``url``; 1 (saying why) when there is none."""
    try:
        answer = httpx.post(f"{url.rstrip('/')}{IDENTITY_PREFIX}{LOCAL_TOKEN_PATH}", json={"principal": principal, "roles": roles, "lifetime": lifetime}, timeout=10)
    except httpx.HTTPError as exc:
        print(f"dev.py token: no local stack at {url} ({type(exc).__name__}); start one with `python3 dev.py serve`", file=sys.stderr)
        return 1
    if answer.status_code != 200:
        print(f"dev.py token: {answer.status_code} {answer.text[:300]} (is the stack in entra mode?)", file=sys.stderr)
        return 1
    found = answer.json()
    print(f"principal {found['principal']} (object id {found['object_id']}, client id {found['client_id']}), roles "
          f"{', '.join(found['roles']) or 'none'}, audience {found['audience']}, valid {found['expires_in']} s", file=sys.stderr)  # fmt: skip
    print(found["access_token"])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dev.py token", description="print a bearer token of the local stack's identity stand-in for a principal with app roles")
    parser.add_argument("--principal", required=True, help="a name (e.g. orders-service) or an object id; a name always maps to the same object id")
    parser.add_argument("--roles", default=CALLER_ROLE, help=f"app roles, comma-separated (default {CALLER_ROLE}; operators: {OPERATOR_ROLE})")
    parser.add_argument("--url", default=f"http://127.0.0.1:{DEFAULT_PORT}", help=f"the running stack (default http://127.0.0.1:{DEFAULT_PORT})")
    parser.add_argument("--lifetime", type=int, default=3600, help="seconds (default 3600)")
    args = parser.parse_args(argv)
    return token(args.url, args.principal, [r.strip() for r in args.roles.split(",") if r.strip()], args.lifetime)


if __name__ == "__main__":
    sys.exit(main())
