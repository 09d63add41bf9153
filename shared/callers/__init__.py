"""Who is calling (as the platform vouches for it), and what each caller may see.

``identity``   :class:`Caller`: mode, principal, name, idp, roles; ``id`` is the key for scoping,
               budgets and usage; the key-mode and queue callers; a caller read back from a record
``principal``  entra mode: the caller App Service authentication names in its headers
"""

from shared.callers.identity import (
    CALLER_ROLE,
    KEY_PRINCIPAL,
    MODES,
    OPERATOR_ROLE,
    Caller,
    CallerMode,
    caller_from_record,
    key_caller,
    owner_of,
    queue_caller,
)
from shared.callers.principal import PRINCIPAL_HEADERS, entra_caller, request_caller

__all__ = [
    "CALLER_ROLE",
    "KEY_PRINCIPAL",
    "MODES",
    "OPERATOR_ROLE",
    "PRINCIPAL_HEADERS",
    "Caller",
    "CallerMode",
    "caller_from_record",
    "entra_caller",
    "key_caller",
    "owner_of",
    "queue_caller",
    "request_caller",
]
