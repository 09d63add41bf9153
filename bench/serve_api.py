"""The service's HTTP API in its own process, for the benchmark: ``python -m bench.serve_api --port P``.

Settings come from the environment (as in Azure) and the app is built by the same
composition root as function_app.py (:meth:`Runtime.from_env`) and served as the Functions
worker serves it (local/functions_worker.py: the extension's catch-all app under uvicorn) on
loopback; the first request opens the runtime, stopping the server closes it. The
benchmark reads this process's memory.
"""

from __future__ import annotations

import argparse

import uvicorn

from local.functions_worker import hosted
from shared.runtime import Runtime


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.serve_api")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    app = hosted(Runtime.from_env())
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
