"""``--via queue``: put each request straight onto the service's storage queue.

The message is the generation JSON plus ``id`` and ``deployment`` (the contract of the
``image-jobs`` queue). The Functions host decodes messages as base64 unless host.json says
``"messageEncoding": "none"``, so the client encodes as the app's host.json says.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Literal

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.storage.queue.aio import QueueClient

from client.lines import BatchRequest
from client.service import JobError

HOST_JSON = Path(__file__).resolve().parent.parent / "host.json"
DEFAULT_QUEUE = "image-jobs"
Encoding = Literal["none", "base64"]


def host_message_encoding(host_json: Path = HOST_JSON) -> Encoding:
    """What the app's host.json tells the Functions host to expect (base64 when it says nothing)."""
    try:
        queues = json.loads(host_json.read_text()).get("extensions", {}).get("queues", {})
    except (OSError, ValueError):
        return "base64"
    return "none" if queues.get("messageEncoding") == "none" else "base64"


class QueueSubmitter:
    """Sends job messages to the queue the app's trigger reads."""

    def __init__(self, queue: QueueClient, encoding: Encoding | None = None) -> None:
        self.queue = queue
        self.encoding: Encoding = encoding or host_message_encoding()

    @classmethod
    def from_connection_string(cls, connection_string: str, queue_name: str = DEFAULT_QUEUE, encoding: Encoding | None = None) -> QueueSubmitter:
        """With the storage account's connection string (local stack, Azurite)."""
        return cls(QueueClient.from_connection_string(connection_string, queue_name), encoding)

    @classmethod
    def with_identity(cls, queue_service_url: str, credential: Any, queue_name: str = DEFAULT_QUEUE, encoding: Encoding | None = None) -> QueueSubmitter:
        """With an Entra ID credential (needs Storage Queue Data Message Sender on the queue)."""
        return cls(QueueClient(queue_service_url, queue_name, credential=credential), encoding)

    def encode(self, request: BatchRequest) -> str:
        """The message text as the host expects it."""
        text = json.dumps(request.message(), ensure_ascii=False)
        return base64.b64encode(text.encode()).decode() if self.encoding == "base64" else text

    async def send(self, request: BatchRequest) -> None:
        """Put one job on the queue; a storage failure becomes a JobError naming only its kind."""
        try:
            await self.queue.send_message(self.encode(request))
        except ResourceNotFoundError:
            raise JobError({"code": "QueueNotFound", "message": f"the queue {self.queue.queue_name!r} does not exist"}) from None
        except AzureError as exc:
            raise JobError({"code": "QueueUnavailable", "message": f"sending to the queue failed: {type(exc).__name__}"}) from None

    async def close(self) -> None:
        """Close the queue client."""
        await self.queue.close()
