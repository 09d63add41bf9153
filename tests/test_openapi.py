"""Issue 15, finding 9: /openai.json says what the API really does.

- it is a valid OpenAPI document (openapi-spec-validator);
- every operation declares the function-key security scheme, its parameters (api-version,
  Idempotency-Key, Prefer) and, for each status, the body schema and headers;
- nothing it documents is unreachable and nothing reachable is undocumented: each documented
  (operation, status) has a scenario here that produces it, in process against Azurite, the
  simulator and (for 500 ConfigurationError) the Key Vault and identity stand-ins; the answer
  matches the documented schema and carries the documented required headers.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from local.azurite import Azurite
from local.identity import IdentityEndpoint, TokenIssuer
from local.keyvault import KeyVaultStandIn
from local.simulator import render_image
from shared.api import create_app
from shared.runtime import Runtime
from shared.settings import Settings
from tests.callers import entra, principal
from tests.conftest import SimControl
from tests.test_api import SHORT_STORAGE_RETRY

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = Settings.from_env(
    {"AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com", "AZURE_OPENAI_DEPLOYMENT": "gpt-image-1-mini", "AzureWebJobsStorage": "UseDevelopmentStorage=true"}
)
SPEC = create_app(Runtime(SETTINGS)).openapi()  # building the document does no I/O
DEAD_STORAGE = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;QueueEndpoint=http://127.0.0.1:9/devstoreaccount1;"
)
DEPLOYMENT = "/openai/deployments/{deployment}/images/generations"
SUBMIT = "/openai/deployments/{deployment}/images/generations:submit"
V1 = "/openai/v1/images/generations"
OPERATION = "/openai/operations/images/{job_id}"
IMAGE = "/images/{name}"
EDITS = "/openai/deployments/{deployment}/images/edits"
EDITS_SUBMIT = "/openai/deployments/{deployment}/images/edits:submit"
EDITS_V1 = "/openai/v1/images/edits"
EDITS_V1_SUBMIT = "/openai/v1/images/edits:submit"
GALLERY = "/gallery"
GALLERY_ITEM = "/gallery/{prefix}/{item_id}"
USAGE = "/usage"
V1_PATHS = (V1, EDITS_V1, EDITS_V1_SUBMIT)
SUBMITS = (SUBMIT, EDITS_SUBMIT, EDITS_V1_SUBMIT)
PNG = render_image(64, 48)


def documented() -> list[tuple[str, str, str]]:
    """(method, path, status) for every numeric status the document lists."""
    return [
        (method.upper(), path, status)
        for path, operations in SPEC["paths"].items()
        for method, operation in operations.items()
        for status in operation["responses"]
        if status.isdigit()
    ]


def test_the_document_is_valid_openapi() -> None:
    validate(SPEC)


def test_no_status_that_is_never_sent_and_every_operation_needs_the_function_key() -> None:
    """FastAPI's 422 HTTPValidationError was advertised; the app answers 400 in the Azure shape."""
    assert "HTTPValidationError" not in str(SPEC) and "422" not in {status for _, _, status in documented()}
    schemes = SPEC["components"]["securitySchemes"]
    assert schemes["functionKey"] == {"type": "apiKey", "in": "header", "name": "x-functions-key", "description": schemes["functionKey"]["description"]}
    assert (schemes["functionKeyQuery"]["in"], schemes["functionKeyQuery"]["name"]) == ("query", "code")
    assert (schemes["entraToken"]["type"], schemes["entraToken"]["scheme"]) == ("http", "bearer")  # IMAGES_CALLER_AUTH=entra
    for path, operations in SPEC["paths"].items():
        for method, operation in operations.items():
            assert operation["security"] == [{"functionKey": []}, {"functionKeyQuery": []}, {"entraToken": []}], (method, path)
            for status, response in operation["responses"].items():
                if path.startswith(GALLERY) and status == "200":  # pages for people
                    assert set(response["content"]) == {"text/html"}, (method, path, status)
                elif status != "302":
                    assert response["content"]["application/json"]["schema"].get("type") == "object", (method, path, status)
                if status[0] in "45" or status == "default":
                    assert response["content"]["application/json"]["schema"]["required"] == ["error"], (method, path, status)


def test_parameters_the_routes_read_by_hand_are_declared() -> None:
    def names(path: str, method: str = "post") -> dict[str, dict[str, Any]]:
        return {p["name"]: p for p in SPEC["paths"][path][method].get("parameters", [])}

    deployment, submit, v1 = names(DEPLOYMENT), names(SUBMIT), names(V1)
    assert deployment["api-version"]["in"] == "query" and deployment["api-version"]["required"] is True
    assert submit["api-version"]["required"] is True and "api-version" not in v1  # checked the same way on every deployment route
    for found in (deployment, submit, v1):
        assert found["Idempotency-Key"]["in"] == "header" and found["Idempotency-Key"]["schema"]["pattern"]
    assert "Prefer" in deployment and "Prefer" in v1 and "Prefer" not in submit
    assert set(names(IMAGE, "get")) == {"name"} and set(names(OPERATION, "get")) == {"job_id"}
    for path in (DEPLOYMENT, SUBMIT, V1):
        assert SPEC["paths"][path]["post"]["requestBody"]["required"] is True


# --------------------------------------------------------------------------- every status reachable


@dataclass
class Apps:
    """Opens the app in process with settings overrides; everything it opened is closed after the test."""

    make_settings: Callable[..., Settings]
    sim: SimControl
    opened: list[tuple[httpx.AsyncClient, Runtime]]
    vault: KeyVaultStandIn | None = None

    async def open(self, *, storage_options: dict[str, Any] | None = None, key_vault_options: dict[str, Any] | None = None, **env: str) -> httpx.AsyncClient:
        runtime = await Runtime(self.make_settings(**env), storage_options=storage_options, key_vault_options=key_vault_options).open()
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(runtime)), base_url="http://api.test", timeout=60)
        self.opened.append((client, runtime))
        return client


@pytest.fixture(scope="module")
def vault_stand_in() -> Iterator[tuple[IdentityEndpoint, KeyVaultStandIn]]:
    issuer = TokenIssuer()
    identity = IdentityEndpoint(issuer).start()
    vault = KeyVaultStandIn(issuer).start()
    yield identity, vault
    vault.close()
    identity.stop()


@pytest.fixture()
async def apps(make_settings: Callable[..., Settings], sim: SimControl) -> AsyncIterator[Apps]:
    found = Apps(make_settings, sim, [])
    yield found
    for client, runtime in reversed(found.opened):
        await client.aclose()
        await runtime.close()


Scenario = Callable[[Apps], Awaitable[httpx.Response]]
SCENARIOS: dict[tuple[str, str, str], Scenario] = {}


def scenario(method: str, path: str, status: int) -> Callable[[Scenario], Scenario]:
    def register(run: Scenario) -> Scenario:
        SCENARIOS[(method, path, str(status))] = run
        return run

    return register


async def generate(client: httpx.AsyncClient, path: str, body: dict[str, Any], deployment: str = "gpt-image-1-mini", **kwargs: Any) -> httpx.Response:
    """POST a generation or an edit (multipart, one PNG) to ``path`` for ``deployment``; ``content=`` sends raw bytes instead."""
    url = path if path in V1_PATHS else path.replace("{deployment}", deployment) + "?api-version=2025-04-01-preview"
    body = {"model": deployment, **body} if path in V1_PATHS else body
    if "content" not in kwargs and "/images/edits" in path:  # an upload, as Azure takes edits: the text fields and one PNG
        kwargs["files"] = [("image", ("image.png", PNG, "image/png"))]
        kwargs["data"] = {name: str(value) for name, value in body.items()}
    elif "content" not in kwargs:
        kwargs["json"] = body
    return await client.post(url, **kwargs)


ASYNC = {"Prefer": "respond-async"}


def _generation_scenarios(path: str) -> None:
    """The statuses the deployment and v1 routes share."""

    @scenario("POST", path, 200)
    async def ok(apps: Apps) -> httpx.Response:
        return await generate(await apps.open(), path, {"prompt": "x"})

    @scenario("POST", path, 202)
    async def queued(apps: Apps) -> httpx.Response:
        return await generate(await apps.open(), path, {"prompt": "x"}, headers=ASYNC)

    @scenario("POST", path, 403)
    async def blocked(apps: Apps) -> httpx.Response:
        apps.sim.configure(policy_blocked=True)
        return await generate(await apps.open(), path, {"prompt": "x"})

    @scenario("POST", path, 429)
    async def throttled(apps: Apps) -> httpx.Response:
        apps.sim.configure(quota_requests=1, quota_window_seconds=60)
        apps.sim.clock(frozen=True)
        client = await apps.open(IMAGES_RETRY_BUDGET_SECONDS="0")
        assert (await generate(client, path, {"prompt": "first"})).status_code == 200
        return await generate(client, path, {"prompt": "second"})

    @scenario("POST", path, 500)
    async def misconfigured(apps: Apps) -> httpx.Response:
        assert apps.vault is not None
        client = await apps.open(
            key_vault_options={**apps.vault.client_options(), "retry_total": 0},
            AZURE_OPENAI_AUTH="keyvault",
            AZURE_OPENAI_API_KEY="",
            AZURE_KEY_VAULT_ENDPOINT=apps.vault.url,
            AZURE_OPENAI_API_KEY_SECRET_NAME=f"missing-{uuid.uuid4().hex[:8]}",
        )
        return await generate(client, path, {"prompt": "x"})

    @scenario("POST", path, 502)
    async def failing(apps: Apps) -> httpx.Response:
        apps.sim.configure(fail_next=10)
        return await generate(await apps.open(IMAGES_MAX_RETRIES="0"), path, {"prompt": "x"})

    @scenario("POST", path, 504)
    async def timing_out(apps: Apps) -> httpx.Response:
        apps.sim.configure(hang_next=1)
        return await generate(await apps.open(IMAGES_SYNC_TIMEOUT_SECONDS="1"), path, {"prompt": "x"})


def _refusal_scenarios(path: str) -> None:
    """What refuses a request before anything is queued or sent: the same on every generation and edit route."""
    queued: dict[str, Any] = {} if path in SUBMITS else {"headers": ASYNC}

    @scenario("POST", path, 400)
    async def invalid(apps: Apps) -> httpx.Response:
        return await generate(await apps.open(), path, {"prompt": "x", "n": "two"})

    @scenario("POST", path, 404)
    async def unknown(apps: Apps) -> httpx.Response:
        return await generate(await apps.open(), path, {"prompt": "x"}, deployment="no-such-deployment")

    @scenario("POST", path, 409)
    async def reused(apps: Apps) -> httpx.Response:
        client = await apps.open(IMAGES_QUEUE=f"openapi-{uuid.uuid4().hex[:12]}")
        key = {"Idempotency-Key": uuid.uuid4().hex}
        headers = {**queued.get("headers", {}), **key}
        assert (await generate(client, path, {"prompt": "one"}, headers=headers)).status_code == 202
        return await generate(client, path, {"prompt": "another"}, headers=headers)

    @scenario("POST", path, 413)
    async def too_large(apps: Apps) -> httpx.Response:
        return await generate(await apps.open(IMAGES_MAX_BODY_BYTES="1024"), path, {"prompt": "x" * 2000}, **queued)

    @scenario("POST", path, 415)
    async def not_json(apps: Apps) -> httpx.Response:
        return await generate(await apps.open(), path, {}, content=b"prompt=x", headers={"content-type": "text/plain", **queued.get("headers", {})})

    @scenario("POST", path, 503)
    async def storage_down(apps: Apps) -> httpx.Response:
        client = await apps.open(storage_options=SHORT_STORAGE_RETRY, AzureWebJobsStorage=DEAD_STORAGE)
        return await generate(client, path, {"prompt": "x"}, **queued)


for _path in (DEPLOYMENT, V1, EDITS, EDITS_V1):
    _generation_scenarios(_path)
for _path in (DEPLOYMENT, SUBMIT, V1, EDITS, EDITS_SUBMIT, EDITS_V1, EDITS_V1_SUBMIT):
    _refusal_scenarios(_path)


def _submitted(path: str) -> None:
    @scenario("POST", path, 202)
    async def submitted(apps: Apps) -> httpx.Response:
        return await generate(await apps.open(IMAGES_QUEUE=f"openapi-{uuid.uuid4().hex[:12]}"), path, {"prompt": "x"})

    @scenario("POST", path, 403)
    async def not_allowed(apps: Apps) -> httpx.Response:
        return await generate(await apps.open(IMAGES_CALLER_LIMITS='{"default": {"deployments": ["gpt-image-2"]}}'), path, {"prompt": "x"})


for _path in SUBMITS:
    _submitted(_path)


@scenario("GET", OPERATION, 200)
async def operation(apps: Apps) -> httpx.Response:
    client = await apps.open(IMAGES_QUEUE=f"openapi-{uuid.uuid4().hex[:12]}")
    accepted = await generate(client, SUBMIT, {"prompt": "x"})
    return await client.get(accepted.headers["Operation-Location"])


@scenario("GET", OPERATION, 404)
async def no_operation(apps: Apps) -> httpx.Response:
    return await (await apps.open()).get(f"/openai/operations/images/{uuid.uuid4().hex}")


@scenario("GET", OPERATION, 503)
async def operation_storage_down(apps: Apps) -> httpx.Response:
    client = await apps.open(storage_options=SHORT_STORAGE_RETRY, AzureWebJobsStorage=DEAD_STORAGE)
    return await client.get(f"/openai/operations/images/{uuid.uuid4().hex}")


@scenario("GET", IMAGE, 302)
async def image_link(apps: Apps) -> httpx.Response:
    client = await apps.open()
    url = (await generate(client, DEPLOYMENT, {"prompt": "x", "response_format": "url"})).json()["data"][0]["url"]
    return await client.get("/images/" + httpx.URL(url).path.split("/images/", 1)[1])


@scenario("GET", IMAGE, 404)
async def no_image(apps: Apps) -> httpx.Response:
    return await (await apps.open()).get("/images/2020-01-01/0123456789abcdef0123456789abcdef/0.png")


@scenario("GET", IMAGE, 503)
async def image_storage_down(apps: Apps) -> httpx.Response:
    client = await apps.open(storage_options=SHORT_STORAGE_RETRY, AzureWebJobsStorage=DEAD_STORAGE)
    return await client.get("/images/2020-01-01/0123456789abcdef0123456789abcdef/0.png")


@scenario("GET", "/healthz", 200)
async def health(apps: Apps) -> httpx.Response:
    return await (await apps.open()).get("/healthz")


@scenario("GET", GALLERY, 200)
async def gallery(apps: Apps) -> httpx.Response:
    return await (await apps.open()).get("/gallery?day=2020-01-01&per_page=5")


@scenario("GET", GALLERY, 400)
async def gallery_bad_filter(apps: Apps) -> httpx.Response:
    return await (await apps.open()).get("/gallery?day=2020-02-30")


@scenario("GET", GALLERY, 503)
async def gallery_storage_down(apps: Apps) -> httpx.Response:
    client = await apps.open(storage_options=SHORT_STORAGE_RETRY, AzureWebJobsStorage=DEAD_STORAGE)
    return await client.get("/gallery?day=2020-01-01")


@scenario("GET", GALLERY_ITEM, 200)
async def gallery_item(apps: Apps) -> httpx.Response:
    client = await apps.open()
    url = (await generate(client, DEPLOYMENT, {"prompt": "x", "response_format": "url"})).json()["data"][0]["url"]
    day, item_id = httpx.URL(url).path.split("/images/", 1)[1].split("/")[:2]
    return await client.get(f"/gallery/{day}/{item_id}")


@scenario("GET", GALLERY_ITEM, 404)
async def no_gallery_item(apps: Apps) -> httpx.Response:
    return await (await apps.open()).get(f"/gallery/2020-01-01/{uuid.uuid4().hex}")


@scenario("GET", GALLERY_ITEM, 503)
async def gallery_item_storage_down(apps: Apps) -> httpx.Response:
    client = await apps.open(storage_options=SHORT_STORAGE_RETRY, AzureWebJobsStorage=DEAD_STORAGE)
    return await client.get(f"/gallery/2020-01-01/{uuid.uuid4().hex}")


@scenario("GET", USAGE, 200)
async def usage(apps: Apps) -> httpx.Response:
    client = await apps.open()
    assert (await generate(client, DEPLOYMENT, {"prompt": "x"})).status_code == 200
    return await client.get(USAGE)


@scenario("GET", USAGE, 400)
async def usage_bad_day(apps: Apps) -> httpx.Response:
    return await (await apps.open()).get(USAGE, params={"day": "2020-02-30"})


@scenario("GET", USAGE, 403)
async def usage_of_another(apps: Apps) -> httpx.Response:
    return await (await apps.open(**entra())).get(USAGE, params={"caller": "entra:someone-else"}, headers=principal("openapi"))


@scenario("GET", USAGE, 503)
async def usage_storage_down(apps: Apps) -> httpx.Response:
    client = await apps.open(storage_options=SHORT_STORAGE_RETRY, AzureWebJobsStorage=DEAD_STORAGE)
    return await client.get(USAGE)


@scenario("GET", GALLERY, 403)
async def gallery_of_another(apps: Apps) -> httpx.Response:
    return await (await apps.open(**entra())).get(GALLERY, params={"caller": "entra:someone-else"}, headers=principal("openapi"))


def test_every_documented_status_has_a_scenario_and_every_scenario_is_documented() -> None:
    assert set(SCENARIOS) == set(documented()), (
        f"documented without a scenario: {sorted(set(documented()) - set(SCENARIOS))}; "
        f"scenarios for statuses the document does not list: {sorted(set(SCENARIOS) - set(documented()))}"
    )


@pytest.mark.slow  # every documented status of every route, each answer checked against its schema (about 9 s): CI runs it
@pytest.mark.parametrize("case", sorted(SCENARIOS), ids=lambda case: " ".join(case))
async def test_every_documented_status_is_reachable(
    case: tuple[str, str, str], apps: Apps, vault_stand_in: tuple[IdentityEndpoint, KeyVaultStandIn], azurite: Azurite, monkeypatch: pytest.MonkeyPatch
) -> None:
    method, path, status = case
    identity, apps.vault = vault_stand_in
    for name, value in identity.env().items():  # the app's identity, as App Service gives it (the keyvault way reads with it)
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AZURE_CLIENT_ID", raising=False)
    response = await SCENARIOS[case](apps)
    assert str(response.status_code) == status, response.text[:500]
    documented_response = SPEC["paths"][path][method.lower()]["responses"][status]
    for header, spec in documented_response.get("headers", {}).items():
        if spec["required"]:
            assert header in response.headers, f"{method} {path} {status} lacks the documented header {header}"
    content = documented_response.get("content")
    if content and "text/html" in content:
        assert response.headers["content-type"].startswith("text/html") and "<html" in response.text.lower()
    elif content:
        errors = sorted(Draft202012Validator(content["application/json"]["schema"]).iter_errors(response.json()), key=str)
        assert not errors, f"{method} {path} {status}: {errors[0].message}"


def test_the_errors_table_lists_every_error_status_the_api_documents() -> None:
    """Finding 10: the errors table left out 500 ConfigurationError (and 403, passed on from upstream)."""
    readme = (ROOT / "docs" / "http-api.md").read_text(encoding="utf-8")
    table = readme.split("\n## Errors\n", 1)[1].split("\n## ", 1)[0]
    rows = {(int(status), code) for status, code in re.findall(r"(?m)^\| (\d{3}) \| `([^`]+)`", table)}
    errors = {int(status) for _, _, status in documented() if status[0] in "45"}
    assert errors <= {status for status, _ in rows}, f"statuses without a row: {sorted(errors - {s for s, _ in rows})}"
    assert (500, "ConfigurationError") in rows
