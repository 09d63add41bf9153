"""The baseline: the same job done the naive way, as a few lines of one's own code would do it.

- asks upstream for a URL (dall-e-3, ``response_format: url``), downloads the image
  into memory with a plain ``httpx.get``, uploads it with the synchronous Blob SDK,
  answers with the blob's URL;
- HTTP: a plain synchronous FastAPI endpoint (``def``: FastAPI runs it in its
  default thread pool), served by uvicorn: ``python -m bench.naive --port P``;
- queue: the same function as the handler; anything that goes wrong raises, so
  the host redelivers after ``visibilityTimeout`` and poisons after ``maxDequeueCount``;
- no validation, no concurrency tuning, no connection reuse for upstream, no 429
  handling, no retries, no idempotency, no record.

Settings use the app's names (AZURE_OPENAI_ENDPOINT, AZURE_OPENAI_API_KEY,
AzureWebJobsStorage). Never deployed; it exists to be measured against.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from collections.abc import Mapping
from typing import Any

import httpx
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient
from fastapi import Body, FastAPI

API_VERSION = "2024-10-21"  # GA: DALL-E 3 with url results
CONTAINER = "naive-images"


class NaiveGenerator:
    """generate -> download -> upload, synchronously."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.endpoint = env["AZURE_OPENAI_ENDPOINT"].rstrip("/")
        self.key = env["AZURE_OPENAI_API_KEY"]
        self.container = BlobServiceClient.from_connection_string(env["AzureWebJobsStorage"]).get_container_client(CONTAINER)
        try:
            self.container.create_container()
        except ResourceExistsError:
            pass

    def generate(self, deployment: str, body: dict[str, Any]) -> dict[str, Any]:
        response = httpx.post(
            f"{self.endpoint}/openai/deployments/{deployment}/images/generations?api-version={API_VERSION}",
            json={**body, "response_format": "url"},
            headers={"api-key": self.key},
            timeout=300,
        )
        response.raise_for_status()
        url = response.json()["data"][0]["url"]
        image = httpx.get(url, timeout=300)
        image.raise_for_status()
        name = f"{uuid.uuid4().hex}.png"
        self.container.upload_blob(name, image.content, overwrite=True)
        return {"created": int(time.time()), "data": [{"url": self.container.get_blob_client(name).url}]}

    def handle_message(self, raw: bytes) -> dict[str, Any]:
        """The queue job: the message is the request body plus ``deployment``."""
        message = json.loads(raw)
        deployment = message.pop("deployment", "dall-e-3")
        message.pop("id", None)
        return self.generate(deployment, message)


def create_naive_app(generator: NaiveGenerator) -> FastAPI:
    app = FastAPI(title="naive image generation")

    @app.post("/openai/deployments/{deployment}/images/generations")
    def generate(deployment: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008  # FastAPI's idiom
        return generator.generate(deployment, body)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m bench.naive")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    uvicorn.run(create_naive_app(NaiveGenerator(os.environ)), host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
