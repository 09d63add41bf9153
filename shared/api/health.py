"""Liveness: the process answers, which deployments it serves, and where their models stand in Azure's lifecycle."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from shared.api.deps import RuntimeDep
from shared.api.schema import health_responses
from shared.api.security import FUNCTION_KEY
from shared.models import lifecycle_view

router = APIRouter(dependencies=FUNCTION_KEY)


@router.get("/healthz", summary="Liveness", response_description="Alive", responses=health_responses())
async def healthz(runtime: RuntimeDep) -> dict[str, Any]:
    """``{"status": "ok", "deployments", "api_style", "models"}``; no call to storage or upstream.

    ``models`` lists each allowed deployment with its family, lifecycle status, dates and successor.
    """
    settings = runtime.settings
    return {
        "status": "ok",
        "deployments": sorted(settings.deployments),
        "api_style": settings.api_style,
        "models": lifecycle_view(settings.deployments, runtime.today()),
    }
