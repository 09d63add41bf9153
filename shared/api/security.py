"""Who may call, as /openapi.json declares it: the function key (header or query) or an Entra ID token.

The schemes only describe; nothing here checks at run time. Azure Functions checks the function key
(IMAGES_CALLER_AUTH=key), App Service authentication the token (entra), before the app sees the
request; the app then reads who called from the platform's headers (shared/api/deps.py).
"""

from __future__ import annotations

from fastapi import Security
from fastapi.security import APIKeyHeader, APIKeyQuery, HTTPBearer

FUNCTION_KEY_HEADER = APIKeyHeader(
    name="x-functions-key",
    scheme_name="functionKey",
    auto_error=False,  # Azure's front end checks the key before the app sees the request; locally there is none
    description="The function key (az functionapp keys list). Azure Functions checks it; the app never sees a request without it.",
)
FUNCTION_KEY_QUERY = APIKeyQuery(
    name="code", scheme_name="functionKeyQuery", auto_error=False, description="The function key as a query parameter."
)
ENTRA_TOKEN = HTTPBearer(
    scheme_name="entraToken",
    auto_error=False,  # App Service authentication checks it before the app sees the request
    description="IMAGES_CALLER_AUTH=entra: an Entra ID token for the app's registration (docs/callers.md), which App Service authentication checks.",
)
# Every router's dependencies: they declare the security schemes (either one) in the document and do nothing at run time.
FUNCTION_KEY = [Security(FUNCTION_KEY_HEADER), Security(FUNCTION_KEY_QUERY), Security(ENTRA_TOKEN)]
