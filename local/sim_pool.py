"""Several simulators as independent backends of one deployment pool: each on its own port, with its own quota and faults.

The local stack serves a pool of them when ``IMAGES_SIM_POOL`` is set (``python -m local.stack serve``
with ``IMAGES_SIM_POOL=3``): the deployment ``gpt-image-2`` is then a pool of that many
simulators, each allowing ``IMAGES_SIM_POOL_RPM`` requests a minute (default 6). The
benchmark (bench/pool.py) and the tests build theirs with :func:`serve_backends`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from local.servers import ServerThread, serve_in_thread
from local.simulator import SimulatorConfig, create_simulator

POOL_NAME = "gpt-image-2"


@dataclass(frozen=True)
class BackendSpec:
    """One simulated backend: its quota (requests per window), latency and priority in the pool."""

    quota_requests: int = 0  # 0: unlimited
    quota_window_seconds: float = 60.0
    latency: float = 0.0
    priority: int = 0

    @property
    def rpm(self) -> int:
        """The quota as the pool setting states it: requests per minute."""
        return max(1, round(self.quota_requests * 60 / self.quota_window_seconds)) if self.quota_requests else 1000


def serve_backends(specs: Sequence[BackendSpec], api_key: str, **config: Any) -> list[ServerThread]:
    """One simulator per spec, each in its own thread on its own port (stop each when done)."""
    servers = []
    for spec in specs:
        sim_config = SimulatorConfig(
            api_keys={api_key},
            latency=spec.latency,
            quota_requests=spec.quota_requests,
            quota_window_seconds=spec.quota_window_seconds,
            **config,
        )
        servers.append(serve_in_thread(create_simulator(sim_config)))
    return servers


def pool_setting(servers: Sequence[ServerThread], specs: Sequence[BackendSpec], name: str = POOL_NAME) -> str:
    """``IMAGES_BACKENDS`` for the simulators: one pool ``name`` of them, in order."""
    entries = [
        {"endpoint": server.url, "deployment": name, "rpm": spec.rpm, "priority": spec.priority}
        for server, spec in zip(servers, specs, strict=True)
    ]
    return json.dumps({name: entries})


def stack_pool(api_key: str, latency: float, environ: Mapping[str, str] = os.environ) -> tuple[list[ServerThread], dict[str, str]]:
    """The local stack's pool, when ``IMAGES_SIM_POOL`` asks for one: its servers and the settings that use them."""
    count = int(environ.get("IMAGES_SIM_POOL") or 0)
    if count <= 0:
        return [], {}
    rpm = int(environ.get("IMAGES_SIM_POOL_RPM") or 6)
    specs = [BackendSpec(quota_requests=rpm, quota_window_seconds=60.0, latency=latency) for _ in range(count)]
    servers = serve_backends(specs, api_key)
    return servers, {"IMAGES_BACKENDS": pool_setting(servers, specs)}
