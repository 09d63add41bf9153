"""The Microsoft Entra token for the model service, through azure-identity's own bearer token provider."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from azure.core.credentials_async import AsyncTokenCredential

from shared.credentials.identity import COGNITIVE_SERVICES_SCOPE, ERROR_CODE, FETCH_TIMEOUT_SECONDS, resource_of
from shared.errors import ServiceError
from shared.redaction import reason

log = logging.getLogger(__name__)


def _token_provider(credential: AsyncTokenCredential, scope: str) -> Callable[[], Awaitable[str]]:
    from azure.identity.aio import get_bearer_token_provider  # imported when first used, as the credentials are

    return get_bearer_token_provider(credential, scope)


class EntraAuth:
    """A bearer token for the model service from the app's identity.

    The provider (azure-core's bearer token policy) caches the token, asks the credential
    again about five minutes before it expires, and lets one caller at a time ask. After
    a 401 for the token it last handed out, a fresh provider (with an empty cache) takes
    its place, so the next call asks the credential again.
    """

    def __init__(
        self,
        credential: AsyncTokenCredential,
        *,
        identity: str,
        scope: str = COGNITIVE_SERVICES_SCOPE,
        owns_credential: bool = False,
    ) -> None:
        self.scope = scope
        self.description = identity
        self._credential = credential
        self._owns_credential = owns_credential
        self._provider = _token_provider(credential, scope)
        self._served: dict[str, str] | None = None  # the headers of the latest token handed out

    async def headers(self) -> dict[str, str]:
        """``Authorization: Bearer <token>``; 503 CredentialUnavailable naming the identity if there is none."""
        try:
            async with asyncio.timeout(FETCH_TIMEOUT_SECONDS):
                token = await self._provider()
        except Exception as exc:  # the credential's errors, or the timeout
            resource = resource_of((self.scope,))
            raise ServiceError(
                503,
                ERROR_CODE,
                f"Could not get a Microsoft Entra token for {resource} from {self.description}: {reason(exc)}",
                transient=True,
            ) from None
        self._served = {"Authorization": f"Bearer {token}"}
        return dict(self._served)

    async def refresh(self, stale: dict[str, str]) -> None:
        """A fresh provider if ``stale`` is still the latest token; a newer token is kept."""
        if stale == self._served:
            self._provider, self._served = _token_provider(self._credential, self.scope), None
            log.info("The model service refused the token from %s; it will be asked for again.", self.description)

    async def close(self) -> None:
        """Close the credential if this object made it."""
        if self._owns_credential:
            await self._credential.close()
