"""Issue 21: the local stack runs in entra mode, as a deployment from infra/ does, and calling services
reach it the way they reach Azure: a bearer token for a principal with app roles.

One stack (`python3 dev.py serve` runs the same: local/stack.py), over real HTTP:

- its front does what App Service authentication does: a missing, forged, expired or foreign token,
  or one for another audience, is 401 (with WWW-Authenticate); /healthz is anonymous; principal
  headers a client sends are removed before the app sees the request, so they name nobody;
- `python3 dev.py token --principal X --roles R` prints a token for X holding R;
- the openai SDK (azure_ad_token_provider), the batch client (with a token, and with
  DefaultAzureCredential against the stand-in's managed identity endpoint) and the smoke test work with it,
  and what they make is recorded as theirs and seen by them (and operators) only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from azure.storage.blob import BlobServiceClient

from client.cli import main as batch_main
from local.identity import LOCAL_AUDIENCE, TokenIssuer, principal_ids
from local.stack import Stack, running_stack
from shared.callers import CALLER_ROLE, OPERATOR_ROLE

ROOT = Path(__file__).resolve().parents[1]
API_VERSION = "2025-04-01-preview"
GENERATE = "/openai/deployments/gpt-image-1-mini/images/generations?api-version=" + API_VERSION


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The local stack as `dev.py serve` starts it (Azurite on free ports, the simulator, the front, the queue runner)."""
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith(("AZURE_", "IMAGES_", "AzureWebJobsStorage"))}
    try:
        with running_stack(latency=0, location=tmp_path_factory.mktemp("entra-stack"), azurite_ports="free") as running:
            assert running.settings.caller_auth == "entra" and running.identity is not None
            yield running
    finally:
        os.environ.update(saved)


def token(stack: Stack, principal: str, *roles: str) -> str:
    """What `dev.py token` asks the stand-in for."""
    answer = httpx.post(f"{stack.url}/.auth/local/token", json={"principal": principal, "roles": list(roles)}, timeout=10)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def record_of(stack: Stack, url: str) -> dict[str, Any]:
    container = stack.settings.images_container
    name = httpx.URL(url).path.split(f"/{container}/", 1)[1]
    blobs = BlobServiceClient.from_connection_string(stack.settings.storage.connection_string).get_container_client(container)
    return json.loads(blobs.download_blob(name.rsplit("/", 1)[0] + "/record.json").readall())  # type: ignore[no-any-return]


def test_the_front_refuses_what_app_service_authentication_refuses(stack: Stack) -> None:
    assert stack.identity is not None
    client_id, _ = stack.identity.issuer.add_principal("orders-service", [CALLER_ROLE], LOCAL_AUDIENCE)
    expired, _ = stack.identity.issuer.issue(LOCAL_AUDIENCE, client_id, lifetime=-60)
    other_audience, _ = stack.identity.issuer.issue("api://someone-else", client_id)
    foreign = TokenIssuer(tenant_id=stack.identity.issuer.tenant_id)  # same tenant and claims, other keys
    foreign.add_principal("orders-service", [CALLER_ROLE], LOCAL_AUDIENCE)
    forged, _ = foreign.issue(LOCAL_AUDIENCE, client_id)
    valid = token(stack, "orders-service", CALLER_ROLE)
    tampered = valid.rsplit(".", 1)[0] + ".AAAA"
    for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": f"Basic {valid}"}, bearer(expired), bearer(other_audience), bearer(forged), bearer(tampered)):
        refused = httpx.post(stack.url + GENERATE, json={"prompt": "x"}, headers=headers, timeout=30)
        assert refused.status_code == 401, (headers, refused.text)
        assert refused.headers["www-authenticate"].startswith("Bearer ") and refused.json()["error"]["code"] == "Unauthorized"
    # A client's own principal headers without a token are no way in either.
    claimed = {"X-MS-CLIENT-PRINCIPAL-ID": str(uuid.uuid4()), "X-MS-CLIENT-PRINCIPAL": "e30="}
    assert httpx.get(f"{stack.url}/openai/operations/images/x", headers=claimed, timeout=30).status_code == 401
    assert httpx.get(f"{stack.url}/healthz", timeout=30).status_code == 200  # excluded, as in the templates
    no_role = httpx.post(stack.url + GENERATE, json={"prompt": "x"}, headers=bearer(token(stack, "no-roles")), timeout=30)
    assert no_role.status_code == 403 and no_role.json()["error"]["code"] == "PermissionDenied"


def test_client_sent_principal_headers_are_stripped(stack: Stack) -> None:
    """A caller with a valid token claims to be an operator of another id: the app never sees the claim."""
    operator = {"auth_typ": "aad", "claims": [{"typ": "oid", "val": str(uuid.uuid4())}, {"typ": "roles", "val": OPERATOR_ROLE}]}
    import base64

    forged = {"X-MS-CLIENT-PRINCIPAL": base64.b64encode(json.dumps(operator).encode()).decode(), "X-MS-CLIENT-PRINCIPAL-NAME": "ceo@contoso.com"}
    headers = {**forged, **bearer(token(stack, "orders-service", CALLER_ROLE))}
    made = httpx.post(stack.url + GENERATE, json={"prompt": "mine", "response_format": "url"}, headers=headers, timeout=60)
    assert made.status_code == 200, made.text
    caller = record_of(stack, made.json()["data"][0]["url"])["caller"]
    _, object_id = principal_ids("orders-service")
    assert caller == {"id": f"entra:{object_id}", "mode": "entra", "principal": object_id, "name": "orders-service", "idp": "aad", "roles": [CALLER_ROLE]}
    # Nor can the forged operator role read someone else's job.
    other = httpx.post(
        stack.url + GENERATE.replace("generations?", "generations:submit?"), json={"prompt": "theirs"},
        headers=bearer(token(stack, "billing-service", CALLER_ROLE)), timeout=60,
    )  # fmt: skip
    assert other.status_code == 202
    seen = httpx.get(f"{stack.url}/openai/operations/images/{other.json()['id']}", headers=headers, timeout=30)
    assert seen.status_code == 404


@pytest.mark.slow  # two Python processes (about 3 s): CI runs it
def test_dev_py_token_prints_a_token_for_a_principal_with_roles(stack: Stack) -> None:
    command = [sys.executable, "-m", "local.token", "--url", stack.url, "--principal", "reports-service", "--roles", f"{CALLER_ROLE},{OPERATOR_ROLE}"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    printed = done.stdout.strip()
    assert printed.count(".") == 2 and "\n" not in printed  # one JWT on stdout, for $(...)
    _, object_id = principal_ids("reports-service")
    assert object_id in done.stderr and CALLER_ROLE in done.stderr
    health = httpx.get(f"{stack.url}/openai/operations/images/nothing-here", headers=bearer(printed), timeout=30)
    assert health.status_code == 404 and health.json()["error"]["code"] == "NotFound"  # authenticated: the app answered
    down = subprocess.run([*command[:4], "http://127.0.0.1:9", *command[5:]], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert down.returncode == 1 and "no local stack at http://127.0.0.1:9" in down.stderr


def test_the_openai_sdk_calls_the_local_stack_with_an_entra_token_provider(stack: Stack) -> None:
    calls: list[str] = []

    def provider() -> str:
        calls.append("token")
        return token(stack, "orders-service", CALLER_ROLE)

    client = openai.AzureOpenAI(azure_endpoint=stack.url, azure_ad_token_provider=provider, api_version=API_VERSION, max_retries=0)
    result = client.images.generate(model="gpt-image-1-mini", prompt="a lighthouse, seen by the SDK", size="1024x1024", quality="low")
    assert calls and result.data and result.data[0].url
    _, object_id = principal_ids("orders-service")
    assert record_of(stack, result.data[0].url)["caller"]["id"] == f"entra:{object_id}"
    # Without a provider (an api key the front does not know), the front answers 401, as App Service does.
    with pytest.raises(openai.AuthenticationError):
        openai.AzureOpenAI(azure_endpoint=stack.url, api_key="not-a-token", api_version=API_VERSION, max_retries=0).images.generate(
            model="gpt-image-1-mini", prompt="x"
        )


def test_the_batch_client_runs_with_a_token_and_with_default_azure_credential(stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"id": f"line-{n}", "prompt": f"a kite {n}"}) for n in range(2)) + "\n")
    common = ["batch", str(prompts), "--endpoint", stack.url, "--deployment", "gpt-image-1-mini", "--poll-interval", "0.05"]
    # 1. A token as `dev.py token` prints it.
    assert batch_main([*common, "--out", str(tmp_path / "with-token"), "--token", token(stack, "batch-runner", CALLER_ROLE)]) == 0
    # 2. DefaultAzureCredential, as a calling service in Azure: the managed identity endpoint, here the stand-in's.
    client_id, object_id = principal_ids("batch-runner")
    for name in ("AZURE_CLIENT_SECRET", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE", "MSI_ENDPOINT", "AZURE_USERNAME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {**stack.identity_env(), "AZURE_CLIENT_ID": client_id}.items():
        monkeypatch.setenv(name, value)
    assert batch_main([*common, "--out", str(tmp_path / "with-identity"), "--scope", f"{LOCAL_AUDIENCE}/.default"]) == 0
    results = sorted((json.loads(line) for line in (tmp_path / "with-identity" / "results.jsonl").read_text().splitlines()), key=lambda r: r["id"])
    assert [r["state"] for r in results] == ["succeeded", "succeeded"]
    # The same Idempotency-Keys (the line ids) were the same caller's jobs both times: nothing generated twice.
    first = sorted((json.loads(line) for line in (tmp_path / "with-token" / "results.jsonl").read_text().splitlines()), key=lambda r: r["id"])
    assert [r["job"] for r in first] == [r["job"] for r in results]
    owner = httpx.get(f"{stack.url}/openai/operations/images/{results[0]['job']}", headers=bearer(token(stack, "batch-runner", CALLER_ROLE)), timeout=30)
    stranger = httpx.get(f"{stack.url}/openai/operations/images/{results[0]['job']}", headers=bearer(token(stack, "stranger", CALLER_ROLE)), timeout=30)
    assert owner.status_code == 200 and stranger.status_code == 404
    assert object_id in json.dumps(record_of(stack, owner.json()["result"]["data"][0]["url"])["caller"])


@pytest.mark.slow  # the smoke test in a process of its own (about 2 s): CI runs it
def test_the_smoke_test_passes_against_the_local_stack_with_an_operator_token(stack: Stack) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    operator = token(stack, "smoke", OPERATOR_ROLE)
    command = [sys.executable, "infra/smoke_test.py", "--url", stack.url, "--deployment", "gpt-image-1-mini", "--token", operator,
               "--queue-connection-string", stack.settings.storage.connection_string, "--queue", stack.settings.queue_name, "--poll", "0.1", "--timeout", "60"]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "smoke test passed" in done.stdout and operator not in done.stdout + done.stderr


def test_a_browser_signs_in_for_a_session_as_with_the_platforms_login(stack: Stack) -> None:
    """The gallery is for people: /.auth/login/local stands in for /.auth/login/aad and keeps the token in the session cookie."""
    with httpx.Client(base_url=stack.url, timeout=30) as browser:
        assert browser.get("/openai/operations/images/x").status_code == 401
        signed_in = browser.get("/.auth/login/local", params={"principal": "me", "roles": OPERATOR_ROLE, "post_login_redirect_uri": "/openai/operations/images/x"})
        assert signed_in.status_code == 302 and signed_in.headers["location"] == "/openai/operations/images/x"
        assert "HttpOnly" in signed_in.headers["set-cookie"]
        after = browser.get("/openai/operations/images/x")
        assert after.status_code == 404 and after.json()["error"]["code"] == "NotFound"  # signed in: the app answered
        away = browser.get("/.auth/login/local", params={"principal": "me", "post_login_redirect_uri": "//evil.example/"})
        assert away.headers["location"] == "/"  # only a path of this site
        assert browser.get("/.auth/logout").status_code == 302
        assert browser.get("/openai/operations/images/x").status_code == 401
