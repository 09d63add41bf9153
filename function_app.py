"""Azure Functions entry point: wires the ASGI app and the queue trigger, nothing else.

Settings are read and checked here, at start: a bad setting stops indexing with a
message that names it. No network call or credential work happens at import.

Both functions share one runtime (one set of clients) in the worker's event loop. The
host starts the ASGI app on the first HTTP request only, and a queue message can come
first, so each entry opens the runtime itself (once; later calls find it open). The app
does not close it: the ASGI shutdown runs from a finalizer in another event loop.
"""

from __future__ import annotations

import azure.functions as func

from shared.api import create_app
from shared.runtime import Runtime

runtime = Runtime.from_env()  # settings checked, log hygiene installed, nothing opened

# One catch-all HTTP function serves every route of the FastAPI app; host.json
# sets routePrefix "" so the paths are exactly Azure OpenAI's. Callers are known by function keys
# (IMAGES_CALLER_AUTH=key), or by App Service authentication in front of the app (entra), which
# then is the one gate: a function key on top would make every caller hold one too.
AUTH_LEVEL = func.AuthLevel.ANONYMOUS if runtime.settings.caller_auth == "entra" else func.AuthLevel.FUNCTION
app = func.AsgiFunctionApp(app=create_app(runtime, owns_runtime=False), http_auth_level=AUTH_LEVEL)


@app.function_name("image_jobs")
@app.queue_trigger(arg_name="msg", queue_name="%IMAGES_QUEUE%", connection="AzureWebJobsStorage")
async def image_jobs(msg: func.QueueMessage) -> None:
    """Run one background generation; raising makes the host redeliver (and poison after maxDequeueCount)."""
    await runtime.handle_queue_message(msg)
