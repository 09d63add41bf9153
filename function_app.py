"""Azure Functions entry point: wires the ASGI app and the queue trigger, nothing else.

Settings are read and checked here, at start: a bad setting stops indexing with a
message that names it. No network call or credential work happens at import.
"""

from __future__ import annotations

import azure.functions as func

from shared import redaction
from shared.api import create_app
from shared.jobs import handle_queue_message
from shared.runtime import Runtime
from shared.settings import Settings

settings = Settings.from_env()
redaction.install_log_hygiene()  # no key, token or SAS signature in any log line
runtime = Runtime(settings)

# One catch-all HTTP function serves every route of the FastAPI app; host.json
# sets routePrefix "" so the paths are exactly Azure OpenAI's.
app = func.AsgiFunctionApp(app=create_app(runtime), http_auth_level=func.AuthLevel.FUNCTION)


@app.function_name("image_jobs")
@app.queue_trigger(arg_name="msg", queue_name="%IMAGES_QUEUE%", connection="AzureWebJobsStorage")
async def image_jobs(msg: func.QueueMessage) -> None:
    """Run one background generation; raising makes the host redeliver (and poison after maxDequeueCount)."""
    await handle_queue_message(runtime.jobs, msg)
