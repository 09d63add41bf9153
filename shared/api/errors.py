"""The Azure error shape for every refusal: ServiceError, unknown routes, bad parameters, crashes."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from shared.errors import ServiceError, invalid

log = logging.getLogger("shared.api")


class ErrorJSONResponse(JSONResponse):
    """An error body that always encodes: text that is not valid Unicode becomes '?', never a second failure."""

    def render(self, content: Any) -> bytes:
        # Starlette's JSONResponse encodes strictly, so an unpaired surrogate echoed from a body would turn a 400 into a 500.
        return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8", "replace")


def error_response(error: ServiceError) -> JSONResponse:
    """``{"error": {"code", "message", "param"?}}`` with the error's status and headers."""
    return ErrorJSONResponse(error.body(), status_code=error.status, headers=error.headers())


async def on_service_error(_: Request, exc: ServiceError) -> Response:
    return error_response(exc)


async def on_http_error(_: Request, exc: StarletteHTTPException) -> Response:
    code = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, str(exc.status_code))
    message = "Resource not found." if exc.status_code == 404 else str(exc.detail)
    return ErrorJSONResponse({"error": {"code": code, "message": message}}, status_code=exc.status_code, headers=exc.headers)


async def on_validation_error(_: Request, exc: RequestValidationError) -> Response:
    first = exc.errors()[0] if exc.errors() else {}
    param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
    return error_response(invalid(param, str(first.get("msg", "Invalid request."))))


async def on_client_disconnect(request: Request, _: ClientDisconnect) -> Response:
    """The caller went away before its body was read: nothing went wrong here, and nothing was done.

    Logged at INFO (what happened, no stack), never as an unhandled error; the answer goes nowhere."""
    log.info("the client disconnected before its request body was read: %s %s", request.method, request.url.path)
    return ErrorJSONResponse({"error": {"code": "ClientDisconnected", "message": "The client disconnected before its request was read."}}, status_code=400)


async def on_unexpected(_: Request, exc: Exception) -> Response:
    log.exception("unhandled error")
    return ErrorJSONResponse(
        {"error": {"code": "InternalServerError", "message": "The server had an error while processing your request."}},
        status_code=500,
    )


# FastAPI(exception_handlers=...) picks the handler by the exception's class (most specific first).
EXCEPTION_HANDLERS: dict[int | type[Exception], Callable[[Request, Any], Coroutine[Any, Any, Response]]] = {
    ServiceError: on_service_error,
    StarletteHTTPException: on_http_error,
    RequestValidationError: on_validation_error,
    ClientDisconnect: on_client_disconnect,
    Exception: on_unexpected,
}
