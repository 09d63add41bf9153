"""The wait for the app identity's new roles before the first upload, in azd's hook and in Terraform.

Finding 2: the platform uploads the package with the app's identity seconds after its blob role is
created; Azure RBAC takes seconds to minutes to apply it and azd does not retry the 403
(Azure/azure-dev#8026). azd runs infra/hooks/wait-for-app-roles.sh (or .ps1) after provisioning:
it waits once per identity and records that in the azd environment; Terraform waits with a
time_sleep after the app's roles and outputs the identity it waited for, so the hook then does not.
Here the hook runs with a stand-in `azd` on PATH that records its arguments, and a wait of 0 s.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from docs.templates import INFRA, ROOT, parse_terraform, tf_resources

HOOKS = INFRA / "hooks"
PRINCIPAL = "6f1f0c8a-3b7e-4b52-9a64-1d2f8e0c7a11"


def _run_hook(tmp_path: Path, shell: list[str], script: Path, env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    record = tmp_path / "azd-calls"
    azd = bin_dir / "azd"
    azd.write_text(f'#!/bin/sh\necho "$@" >> "{record}"\n', encoding="utf-8")
    azd.chmod(0o755)
    run = subprocess.run(
        [*shell, str(script)], capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "IMAGES_ROLE_WAIT_SECONDS": "0", **env},
    )  # fmt: skip
    return run, record.read_text(encoding="utf-8") if record.exists() else ""


def _shells() -> list[tuple[list[str], Path]]:
    found = [(["sh"], HOOKS / "wait-for-app-roles.sh")]
    if shutil.which("pwsh"):
        found.append((["pwsh", "-NoProfile", "-File"], HOOKS / "wait-for-app-roles.ps1"))
    return found


@pytest.mark.parametrize(("shell", "script"), _shells(), ids=lambda value: getattr(value, "name", ""))
def test_the_hook_waits_once_per_identity_and_records_it(tmp_path: Path, shell: list[str], script: Path) -> None:
    run, calls = _run_hook(tmp_path, shell, script, {"AZURE_FUNCTION_IDENTITY_PRINCIPAL_ID": PRINCIPAL})
    assert run.returncode == 0, run.stderr
    assert f"waiting 0 s for the new roles of identity {PRINCIPAL}" in run.stdout
    assert calls.split() == ["env", "set", "IMAGES_ROLES_SETTLED_FOR", PRINCIPAL]

    again, calls_again = _run_hook(tmp_path / "again", shell, script, {"AZURE_FUNCTION_IDENTITY_PRINCIPAL_ID": PRINCIPAL,
                                                                      "IMAGES_ROLES_SETTLED_FOR": PRINCIPAL})  # fmt: skip
    assert again.returncode == 0 and "given time already" in again.stdout and calls_again == ""

    other, calls_other = _run_hook(tmp_path / "new", shell, script, {"AZURE_FUNCTION_IDENTITY_PRINCIPAL_ID": "new-identity",
                                                                    "IMAGES_ROLES_SETTLED_FOR": PRINCIPAL})  # fmt: skip
    assert other.returncode == 0 and calls_other.split()[-1] == "new-identity", "a new identity (azd down, then up) waits again"


def test_the_hook_does_nothing_without_the_identity_output(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    run, calls = _run_hook(tmp_path / "x", ["sh"], HOOKS / "wait-for-app-roles.sh", {})
    assert run.returncode == 0 and "nothing to wait for" in run.stdout and calls == ""


def test_azd_runs_the_hook_after_provisioning_on_every_platform() -> None:
    config = yaml.safe_load((ROOT / "azure.yaml").read_text(encoding="utf-8"))
    hook = config["hooks"]["postprovision"]
    assert hook["posix"] == {"shell": "sh", "run": "./infra/hooks/wait-for-app-roles.sh"}
    assert hook["windows"] == {"shell": "pwsh", "run": "./infra/hooks/wait-for-app-roles.ps1"}
    assert (HOOKS / "wait-for-app-roles.sh").stat().st_mode & 0o111, "executable"
    ps1 = (HOOKS / "wait-for-app-roles.ps1").read_text(encoding="utf-8")
    for needle in ("AZURE_FUNCTION_IDENTITY_PRINCIPAL_ID", "IMAGES_ROLES_SETTLED_FOR", "IMAGES_ROLE_WAIT_SECONDS", "120", "azd env set"):
        assert needle in ps1, f"the PowerShell twin handles {needle}"


def test_terraform_waits_after_every_app_role_and_tells_the_hook() -> None:
    resources = tf_resources(parse_terraform())
    wait = resources["time_sleep.app_roles"]
    waits_for = {item.strip("${}") for item in wait["depends_on"]}
    app_roles = {name for name, body in resources.items()
                 if name.startswith("azurerm_role_assignment.") and body["principal_id"] == "${local.app_principal_id}"}  # fmt: skip
    assert app_roles and app_roles <= waits_for
    assert wait["create_duration"] == '"${var.role_wait_seconds}s"'
    assert wait["triggers"] == {"principal_id": "${local.app_principal_id}"}, "once per identity"
    outputs = (INFRA / "terraform" / "outputs.tf").read_text(encoding="utf-8")
    assert "value = time_sleep.app_roles.triggers.principal_id" in outputs
