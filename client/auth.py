"""How the client authenticates to the service: the function key, or an Entra ID token.

Both are ``httpx.Auth`` objects rather than default headers, so a request sent without
auth (an image download from storage) can never carry them by accident.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import httpx
from azure.identity.aio import DefaultAzureCredential, get_bearer_token_provider


class FunctionKeyAuth(httpx.Auth):
    """``x-functions-key: <key>`` on every request to the function app."""

    def __init__(self, key: str) -> None:
        self._key = key

    def auth_flow(self, request: httpx.Request) -> Any:
        request.headers["x-functions-key"] = self._key
        yield request

    def __repr__(self) -> str:
        return "FunctionKeyAuth(<key>)"


class BearerTokenAuth(httpx.Auth):
    """``Authorization: Bearer <token>`` from an async token provider (azure-identity caches and refreshes)."""

    def __init__(self, provider: Callable[[], Awaitable[str]]) -> None:
        self._provider = provider

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        request.headers["Authorization"] = f"Bearer {await self._provider()}"
        yield request


def static_token(token: str) -> BearerTokenAuth:
    """A bearer token given as it is (the local stack's ``dev.py token``); it is not renewed."""

    async def provider() -> str:
        return token

    return BearerTokenAuth(provider)


def entra_auth(scope: str) -> tuple[BearerTokenAuth, Any]:
    """Tokens for ``scope`` (e.g. ``api://<app id>/.default``) from DefaultAzureCredential.

    Returns the auth and the credential, which the caller closes when done.
    """
    credential = DefaultAzureCredential()
    return BearerTokenAuth(get_bearer_token_provider(credential, scope)), credential
