"""The simulator's image edits: Azure's edits endpoint with its rules and errors. Never deployed.

Paths (mounted by :func:`local.simulator.create_simulator`)
    POST /openai/deployments/{deployment}/images/edits?api-version=...
    POST /openai/v1/images/edits            ``model`` (a form field) names the deployment
    POST /v1/images/edits                   OpenAI's own

The body is ``multipart/form-data``: ``image`` or ``image[]`` (1-16 files), optional ``mask``,
and the text fields. The simulator keeps its own copy of the rules, as for generations:
PNG or JPEG inputs (WEBP on OpenAI's path), under 50 MB each; the mask a PNG with an alpha
channel, the size of the first image; ``input_fidelity`` on gpt-image-1 and -1.5 only;
dall-e-3 does not edit; unknown parameters are refused. Auth, api-version, quota, injected
faults, latency, release and the stats (``edits`` counts billed edits; they count in
``requests``, ``generations`` and ``succeeded`` too) work as for generations.

The output depends on the inputs, so tests can tell which inputs arrived: the first image,
scaled to the output size; each further image as a thumbnail along the bottom edge (image
2 leftmost); where the mask's alpha is 0, a colour taken from the prompt (:func:`fill_colour`);
everything else kept pixel for pixel.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from PIL import Image, UnidentifiedImageError
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from local.simulator import (
    DALL_E_3,
    DEPLOYMENT_NOT_FOUND,
    GPT_IMAGE_1,
    GPT_IMAGE_1_5,
    POLICY_BLOCKED,
    Flavor,
    ImageParams,
    SimError,
    _azure_error,
    _filter_results,
    _invalid,
    _redacted_headers,
    _Rendered,
    check_request,
    refuse_flagged,
    streamed_image,
)

if TYPE_CHECKING:
    from local.simulator import Simulator

Style = Literal["deployment", "v1", "openai"]
MAX_IMAGES = 16
MAX_FILE_BYTES = 50 * 1024 * 1024
FIDELITY_FAMILIES = frozenset({GPT_IMAGE_1, GPT_IMAGE_1_5})
_TEXT_FIELDS = frozenset({"prompt", "model", "n", "size", "quality", "user", "output_format", "output_compression", "background", "stream", "partial_images"})
_INTEGERS = frozenset({"n", "output_compression", "partial_images"})


def fill_colour(prompt: str) -> tuple[int, int, int]:
    """The colour an edit paints where the mask is transparent: from the prompt, so tests can predict it."""
    digest = hashlib.sha256(prompt.encode()).digest()
    return digest[0], digest[1], digest[2]


@dataclass
class EditForm:
    """A multipart edit as received: text fields, images in order, the mask, and a summary for the stats."""

    fields: dict[str, Any] = field(default_factory=dict)
    images: list[bytes] = field(default_factory=list)
    mask: bytes | None = None
    summary: dict[str, Any] = field(default_factory=dict)


async def read_form(request: Request) -> EditForm:
    """The form, or 400 as Azure answers a body that is not multipart or names a file it does not know."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise _invalid(None, f"Invalid Content-Type header ({content_type or 'none'}), expected multipart/form-data.", "invalid_request")
    form = EditForm()
    async with request.form(max_files=64, max_fields=64) as parsed:
        for name, value in parsed.multi_items():
            if isinstance(value, UploadFile):
                data = await value.read()
                form.summary.setdefault("files", []).append({"name": name, "filename": value.filename, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
                _add_file(form, name, data)
            else:
                form.fields[name] = int(value) if name in _INTEGERS and value.lstrip("-").isdigit() else value
    form.summary["fields"] = {k: (v[:200] if isinstance(v, str) else v) for k, v in form.fields.items()}
    return form


def _add_file(form: EditForm, name: str, data: bytes) -> None:
    if name in ("image", "image[]"):
        form.images.append(data)
    elif name == "mask":
        form.mask = data
    else:
        raise _invalid(name, f"Unknown parameter: '{name}'.", "unknown_parameter")
    if len(data) > MAX_FILE_BYTES:
        raise _invalid(name, f"Invalid '{name}': the file is larger than 50 MB.", "image_too_large")


def _open(data: bytes, param: str, formats: tuple[str, ...]) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError):
        raise _invalid(param, f"Invalid image file for '{param}': the file could not be read as an image.", "invalid_image_format") from None
    if image.format not in formats:
        raise _invalid(param, f"Invalid image file for '{param}': {image.format} is not supported. Supported formats are: {', '.join(formats)}.", "invalid_image_format")
    return image


def check_edit(family: str, form: EditForm, flavor: Flavor) -> tuple[ImageParams, list[Image.Image], Image.Image | None]:
    """The family's edit rules on a form: the checked parameters, the images and the mask; SimError (400) otherwise."""
    fields = dict(form.fields)
    allowed = _TEXT_FIELDS | ({"input_fidelity"} if family in FIDELITY_FAMILIES else set())
    for name in fields:
        if name not in allowed:
            raise _invalid(name, f"Unknown parameter: '{name}'.", "unknown_parameter")
    fidelity = fields.pop("input_fidelity", None)
    if fidelity is not None and fidelity not in ("low", "high"):
        raise _invalid("input_fidelity", f"Invalid value: '{fidelity}'. Supported values are: 'low' and 'high'.")
    if "stream" in fields:
        fields["stream"] = fields["stream"] == "true"
    if not form.images:
        raise _invalid("image", "Missing required parameter: 'image'.", "missing_required_parameter")
    if len(form.images) > MAX_IMAGES:
        raise _invalid(
            "image",
            f"Invalid 'image': array too long. Expected an array with maximum length {MAX_IMAGES}, but got an array with length {len(form.images)} instead.",
            "array_above_max_length",
        )
    params = check_request(family, fields)
    formats = ("PNG", "JPEG", "WEBP") if flavor == "openai" else ("PNG", "JPEG")
    images = [_open(data, "image", formats) for data in form.images]
    mask = _check_mask(form.mask, images[0]) if form.mask is not None else None
    return params, images, mask


def _check_mask(data: bytes, first: Image.Image) -> Image.Image:
    mask = _open(data, "mask", ("PNG",))
    if "A" not in mask.getbands() and "transparency" not in mask.info:
        raise _invalid("mask", f"Invalid mask image: the mask must have an alpha channel, got mode {mask.mode}.", "invalid_mask_image")
    if mask.size != first.size:
        raise _invalid(
            "mask", f"Invalid mask image format - mask size {mask.size[0]}x{mask.size[1]} does not match image size {first.size[0]}x{first.size[1]}.", "invalid_mask_image"
        )
    return mask


def render_edit(images: list[Image.Image], mask: Image.Image | None, params: ImageParams, size: tuple[int, int]) -> bytes:
    """The edited image: the first image at ``size``, thumbnails of the others, the mask's transparent part painted."""
    canvas = images[0].convert("RGBA").resize(size)
    thumb = (max(1, size[0] // 8), max(1, size[1] // 8))
    for index, other in enumerate(images[1:]):
        canvas.paste(other.convert("RGBA").resize(thumb), (index * thumb[0], size[1] - thumb[1]))
    if mask is not None:
        alpha = mask.convert("RGBA").getchannel("A").resize(size)
        painted = Image.new("RGBA", size, (*fill_colour(params.prompt), 255))
        canvas = Image.composite(canvas, painted, alpha.point(lambda a: 255 if a else 0))
    buffer = io.BytesIO()
    if params.output_format == "jpeg":
        canvas.convert("RGB").save(buffer, "JPEG", quality=params.jpeg_quality)
    else:
        (canvas if params.background == "transparent" else canvas.convert("RGB")).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def _edit_usage(params: ImageParams, images: list[Image.Image]) -> dict[str, Any]:
    text = max(1, len(params.prompt) // 4)
    image_tokens = 65 * len(images)  # the simulator's flat price per input image
    output = round(1056 * params.width * params.height / (1024 * 1024)) * params.n
    details = {"text_tokens": text, "image_tokens": image_tokens}
    return {"input_tokens": text + image_tokens, "input_tokens_details": details, "output_tokens": output, "total_tokens": text + image_tokens + output}


class EditSimulator:
    """The edit routes over a :class:`~local.simulator.Simulator`'s state (config, stats, clock, quota, faults)."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    async def deployment_route(self, request: Request) -> Response:
        return await self._serve(request, "deployment", request.path_params["deployment"])

    async def v1_route(self, request: Request) -> Response:
        return await self._serve(request, "v1", None)

    async def openai_route(self, request: Request) -> Response:
        return await self._serve(request, "openai", None)

    async def _serve(self, request: Request, style: Style, path_deployment: str | None) -> Response:
        sim, started, request_id = self.sim, time.perf_counter(), str(uuid.uuid4())
        sim.stats.requests += 1
        at = datetime.fromtimestamp(sim.clock.now(), UTC).isoformat(timespec="milliseconds")
        entry: dict[str, Any] = {
            "id": request_id, "at": at, "method": request.method, "path": request.url.path, "query": str(request.url.query),
            "style": style, "deployment": path_deployment, "family": None, "headers": _redacted_headers(request), "body": None,
        }  # fmt: skip
        sim.stats.recent.append(entry)
        headers = {"x-request-id": request_id, "apim-request-id": request_id}
        try:
            response, outcome = await self._edit(request, style, path_deployment, entry, headers), "ok"
        except SimError as exc:
            response, outcome = exc.response(), exc.outcome
            setattr(sim.stats, outcome, getattr(sim.stats, outcome) + 1)
        response.headers.update(headers)
        response.headers["openai-processing-ms"] = str(round((time.perf_counter() - started) * 1000))
        entry["status"], entry["outcome"] = response.status_code, outcome
        sim._notify()
        return response

    def _target(self, style: Style, path_deployment: str | None, form: EditForm) -> tuple[str, str]:
        """(deployment, family) from the path or the ``model`` field; 404 as Azure answers an unknown one."""
        deployment = path_deployment or form.fields.get("model")
        if path_deployment is None and deployment is None:
            raise _invalid("model", "Missing required parameter: 'model'.", "missing_required_parameter")
        family = self.sim.config.family_of(str(deployment))
        if family is None:
            raise _azure_error(404, "DeploymentNotFound", DEPLOYMENT_NOT_FOUND)
        if path_deployment is not None:
            form.fields.pop("model", None)  # the openai SDK repeats it; the path decides
        return str(deployment), family

    async def _edit(self, request: Request, style: Style, path_deployment: str | None, entry: dict[str, Any], headers: dict[str, str]) -> Response:
        sim = self.sim
        flavor: Flavor = "openai" if style == "openai" else "azure"
        api_version = sim._check_api_version(request) if style == "deployment" else style
        if style == "deployment" and sim.config.enforce_api_version and api_version[:10] < "2025-04-01":
            raise _azure_error(400, "OperationNotSupported", f"The imagesEdits operation does not work with api-version {api_version}; use 2025-04-01-preview or later.")
        sim._check_auth(request, style)
        form = await read_form(request)
        entry["body"] = form.summary
        deployment, family = self._target(style, path_deployment, form)
        entry["deployment"], entry["family"] = deployment, family
        if family == DALL_E_3:
            raise _azure_error(
                400, "OperationNotSupported", f"The imagesEdits operation does not work with the specified model, {family}. Please choose different model and try again."
            )
        params, images, mask = check_edit(family, form, flavor)
        if sim.config.policy_blocked:
            raise _azure_error(403, "Forbidden", POLICY_BLOCKED, outcome="blocked")
        headers.update(sim._quota(deployment, api_version, flavor))
        sim._fault(params.prompt, flavor)
        refuse_flagged(params.prompt, int(sim.clock.now()), params.prompt)  # edits are filtered as generations are
        # The work starts: billed from here, as for generations.
        sim.stats.generations += 1
        sim.stats.edits += 1
        sim.stats.deployments[deployment] = sim.stats.deployments.get(deployment, 0) + 1
        if params.stream:
            return await self._streamed(request, params, images, mask, headers["x-request-id"])
        with sim._at_work() as released:
            finished = await sim._work(request, sim._delay(params.prompt), released)
        if not finished:
            raise SimError(499, {"error": {"code": "ClientClosedRequest", "message": "The client went away during the edit."}}, outcome="abandoned")
        size = images[0].size if params.size == "auto" else (params.width, params.height)
        data = await asyncio.to_thread(render_edit, images, mask, params, size)
        item: dict[str, Any] = {"b64_json": base64.b64encode(data).decode()}
        if flavor == "azure":
            item["content_filter_results"] = _filter_results()
        sim.stats.succeeded += 1
        sim.stats.images += params.n
        payload = {"created": int(sim.clock.now()), "data": [dict(item) for _ in range(params.n)], "usage": _edit_usage(params, images)}
        return JSONResponse(payload)


    async def _streamed(self, request: Request, params: ImageParams, images: list[Image.Image], mask: Image.Image | None, tag: str) -> Response:
        """The edit as a stream (local/sim_stream.py): partial images, then the completed image, for each of ``n``."""
        size = images[0].size if params.size == "auto" else (params.width, params.height)
        rendered = _Rendered(await asyncio.to_thread(render_edit, images, mask, params, size), params.output_format)
        usage = _edit_usage(replace(params, n=1), images)
        streamed = [streamed_image(rendered, f"{tag}/{i}", params.partial_images, usage, first_image=i == 0) for i in range(params.n)]
        return self.sim.stream_response(request, "image_edit", replace(params, width=size[0], height=size[1]), streamed)


def edit_routes(sim: Simulator) -> list[Route]:
    """The edit routes, for :func:`local.simulator.create_simulator`."""
    edits = EditSimulator(sim)
    return [
        Route("/openai/deployments/{deployment}/images/edits", edits.deployment_route, methods=["POST"]),
        Route("/openai/v1/images/edits", edits.v1_route, methods=["POST"]),
        Route("/v1/images/edits", edits.openai_route, methods=["POST"]),
    ]
