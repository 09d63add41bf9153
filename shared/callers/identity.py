"""Who is calling, as the platform vouches for it: one :class:`Caller` per request or queue message.

How callers are known is one setting, ``IMAGES_CALLER_AUTH`` (shared/settings.py):

- **key** (the default): function keys, one trust domain. The Python worker is not told which
  function key the host accepted, so the app cannot tell keys apart: every key holder is one
  caller, ``key:function-key``, and holds the operator role (it is the deployment's owner: it
  sees every job, the queue's included). Identity headers a client sends are ignored and never
  written anywhere.
- **entra**: App Service authentication with Microsoft Entra ID validated the caller's token and
  set the ``X-MS-CLIENT-PRINCIPAL*`` headers (shared/callers/principal.py reads them). The
  principal is the token's object id (``oid``), stable for the life of the identity; the app
  roles in the token (:data:`CALLER_ROLE`, :data:`OPERATOR_ROLE`) say what it may do.
- **queue**: a message carries no identity. Whoever may send to the queue (Storage Queue Data
  Message Sender) is one trust domain, and its jobs belong to one caller named for the queue,
  ``queue:<queue name>``.

``Caller.id`` is the one key for scoping (job ids, input names, who may read what), budgets and
usage. :meth:`Caller.record` is what records store as ``caller``: only what the platform said.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

CallerMode = Literal["key", "entra", "queue"]
MODES: tuple[CallerMode, ...] = ("key", "entra", "queue")

# App roles of the app registration (the templates define them with these values).
CALLER_ROLE = "Images.Caller"
OPERATOR_ROLE = "Images.Operator"
# Key mode: the app cannot tell function keys apart, so every key holder is this one principal.
KEY_PRINCIPAL = "function-key"


@dataclass(frozen=True)
class Caller:
    """One caller, as the platform vouches for it; never built from a value the client chose."""

    mode: str  # "key" | "entra" | "queue"
    principal: str  # entra: the object id (oid); key: "function-key"; queue: the queue's name
    name: str | None = None  # a display name (entra: upn or the client app's name), None when unknown
    idp: str | None = None  # the identity provider (entra: "aad")
    roles: frozenset[str] = field(default_factory=frozenset)

    @property
    def id(self) -> str:
        """``{mode}:{principal}``: the key for scoping, budgets and usage."""
        return f"{self.mode}:{self.principal}"

    @property
    def is_operator(self) -> bool:
        """True when the caller holds the operator role: it sees every caller's jobs and images."""
        return OPERATOR_ROLE in self.roles

    def may_read(self, owner: str | None) -> bool:
        """True when this caller may see something ``owner`` (a :attr:`id`, or None: unknown) made."""
        return self.is_operator or (owner is not None and owner == self.id)

    def record(self) -> dict[str, Any]:
        """What a record stores as ``caller``: ``{id, mode, principal, name?, idp?, roles?}``."""
        found: dict[str, Any] = {"id": self.id, "mode": self.mode, "principal": self.principal}
        if self.name:
            found["name"] = self.name
        if self.idp:
            found["idp"] = self.idp
        if self.roles:
            found["roles"] = sorted(self.roles)
        return found


def key_caller() -> Caller:
    """Key mode's one caller: whoever holds a function key (the deployment's owner, so an operator)."""
    return Caller("key", KEY_PRINCIPAL, name="function key holder", roles=frozenset({OPERATOR_ROLE}))


def queue_caller(queue: str) -> Caller:
    """The caller every message of ``queue`` runs as: the queue is its own trust domain."""
    return Caller("queue", queue, name=f"queue {queue}")


def caller_from_record(value: object) -> Caller | None:
    """The :class:`Caller` a record stored with :meth:`Caller.record`; None for anything else
    (a record written before callers were known, or a shape this app never wrote)."""
    if not isinstance(value, Mapping):
        return None
    mode, principal = value.get("mode"), value.get("principal")
    if mode not in MODES or not isinstance(principal, str) or not principal or value.get("id") != f"{mode}:{principal}":
        return None
    name, idp, roles = value.get("name"), value.get("idp"), value.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        return None
    return Caller(
        str(mode), principal, name if isinstance(name, str) else None, idp if isinstance(idp, str) else None, frozenset(roles)
    )


def owner_of(record: Mapping[str, Any] | None) -> str | None:
    """The :attr:`Caller.id` a record names as its caller, or None when it names none this app wrote."""
    found = caller_from_record(record.get("caller")) if record else None
    return found.id if found else None
