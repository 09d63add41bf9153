"""The service's HTTP API in its own process, for the benchmark: ``python -m bench.serve_api --port P``.

Settings come from the environment (as in Azure); the app is built exactly as
function_app.py builds it (same settings, service, jobs and log hygiene), and
served by uvicorn on loopback. The benchmark reads this process's memory.
"""

from __future__ import annotations

import argparse

import uvicorn

from shared import redaction
from shared.api import create_app
from shared.runtime import Runtime
from shared.settings import Settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.serve_api")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    redaction.install_log_hygiene()
    uvicorn.run(create_app(Runtime(settings)), host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
