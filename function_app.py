"""Azure Functions entry point: wires the HTTP app and the queue trigger, nothing else.

HTTP goes through the HTTP streams extension (azurefunctions-extensions-http-fastapi; Functions runtime
4.34.1 or later, ``PYTHON_ENABLE_INIT_INDEXING=1`` on Python 3.12 and earlier; the templates set it).
Importing the extension switches every HTTP trigger of the app to FastAPI's types: the worker serves HTTP
with a uvicorn server of its own and hands the function a FastAPI ``Request``; the response the function
returns is sent as it streams. One catch-all function serves every route of the FastAPI app
(``shared.api.hosting``); host.json sets routePrefix "" so the paths are exactly Azure OpenAI's.

Settings are read and checked here, at start: a bad setting stops indexing with a message that names it.
No network call or credential work happens at import.

Both functions share one runtime (one set of clients) in the worker's event loop. Each opens it itself
(once; later calls find it open), since either may be called first; the app does not close it.
"""

from __future__ import annotations

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

from shared.api import create_app
from shared.api.hosting import http_function
from shared.runtime import Runtime

runtime = Runtime.from_env()  # settings checked, log hygiene installed, nothing opened
answer = http_function(runtime, create_app(runtime, owns_runtime=False))

# Callers are known by function keys (IMAGES_CALLER_AUTH=key), or by App Service authentication in front of
# the app (entra), which then is the one gate: a function key on top would make every caller hold one too.
AUTH_LEVEL = func.AuthLevel.ANONYMOUS if runtime.settings.caller_auth == "entra" else func.AuthLevel.FUNCTION
app = func.FunctionApp(http_auth_level=AUTH_LEVEL)


@app.function_name("http_app_func")
@app.route(route="{*route}", methods=list(func.HttpMethod), auth_level=AUTH_LEVEL)
async def http_app_func(req: Request) -> Response:
    """Every HTTP route: the FastAPI app answers the request, streamed responses included."""
    return await answer(req)


@app.function_name("image_jobs")
@app.queue_trigger(arg_name="msg", queue_name="%IMAGES_QUEUE%", connection="AzureWebJobsStorage")
async def image_jobs(msg: func.QueueMessage) -> None:
    """Run one background generation; raising makes the host redeliver (and poison after maxDequeueCount)."""
    await runtime.handle_queue_message(msg)
