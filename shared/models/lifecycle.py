"""Where each configured deployment's model family stands in Azure's lifecycle on a given day.

Pure functions of the configuration and a date, so the caller decides what "today" is
(the app passes the real date at start and on each ``/healthz``; tests pass any date).
Nothing here stops a request: the deployment is the customer's, and Azure decides when a
retired model stops answering.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Literal

from shared.models.families import BY_NAME, Family

State = Literal["openai-only", "preview", "ga", "no-new-customers", "retired", "unknown"]


def lifecycle_state(family: Family, today: date) -> State:
    """``retired`` from the retirement date on, ``no-new-customers`` from the deprecation date on, else as released."""
    if family.retires is not None and today >= family.retires:
        return "retired"
    if family.no_new_customers is not None and today >= family.no_new_customers:
        return "no-new-customers"
    return family.status


def lifecycle_view(deployments: Mapping[str, str], today: date) -> list[dict[str, object]]:
    """One entry per allowed deployment (sorted by name): its family and where that family stands on ``today``.

    ``deployments`` maps deployment name -> family (``Settings.deployments``). Dates are ISO
    strings or None when Azure has published none; a family the table does not know is
    reported as ``unknown`` rather than raising, since this view is for people looking.
    """
    view: list[dict[str, object]] = []
    for deployment, name in sorted(deployments.items()):
        family = BY_NAME.get(name)
        view.append(
            {
                "deployment": deployment,
                "family": name,
                "status": lifecycle_state(family, today) if family else "unknown",
                "no_new_customers": _iso(family.no_new_customers) if family else None,
                "retires": _iso(family.retires) if family else None,
                "successor": family.successor if family else None,
            }
        )
    return view


def retired_warnings(deployments: Mapping[str, str], today: date) -> list[tuple[str, str]]:
    """(deployment, warning) for each deployment whose family Azure retired on or before ``today``, naming the successor."""
    warnings = []
    for deployment, name in sorted(deployments.items()):
        family = BY_NAME.get(name)
        if family is None or family.retires is None or lifecycle_state(family, today) != "retired":
            continue
        move = f"deploy {family.successor} and point IMAGES_DEPLOYMENTS at it" if family.successor else "choose a current model"
        warnings.append((deployment,
            f"deployment {deployment!r} runs {name}, which Azure retired on {family.retires.isoformat()}; "
            f"requests still go upstream until Azure refuses them: {move}"
        ))  # fmt: skip
    return warnings


def _iso(day: date | None) -> str | None:
    return day.isoformat() if day else None
