"""Liveness: the process answers, and which deployments it serves."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from shared.api.deps import RuntimeDep

router = APIRouter()


@router.get("/healthz", summary="Liveness")
async def healthz(runtime: RuntimeDep) -> dict[str, Any]:
    """``{"status": "ok", "deployments", "api_style"}``; no call to storage or upstream."""
    settings = runtime.settings
    return {"status": "ok", "deployments": sorted(settings.deployments), "api_style": settings.api_style}
