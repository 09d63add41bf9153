"""The roles table of docs/credentials.md: every identity and every role it gets, from the templates.

Each role assignment the templates make (docs/templates.py reads them) stands for one or more rows
of the table, said here in words (``BY_ASSIGNMENT``); the grants no template can make (the
deployer's, an existing AI account's, the `key` way's) are rows of their own
(``OUTSIDE_THE_TEMPLATES``). ``render_roles`` is docs/generate.py's renderer of the ``roles``
region; tests/test_infra_roles.py fails when an assignment of the templates has no rows here, or
rows here stand for an assignment the templates no longer make.
"""

from __future__ import annotations

import datetime as dt

from docs.templates import Assignment, named, terraform_assignments

SBDC = "Storage Blob Data Contributor"
APP, CALLER, OPERATOR, DEVELOPER, DEPLOYER = "app", "caller", "operator", "developer", "deployer"
TEMPLATES, YOU = "templates", "you"
APP_CONTAINERS = "containers `images`, `image-jobs`"
QUEUES = "queues `image-jobs`, `image-jobs-poison`, the results queue if any"
REGISTRATION = "the app registration `images-<token>`"

Row = tuple[str, str, str, str, str, str]  # identity, role, scope, when, granted by, for what

# Each assignment (principal, role by name, scope, loop, conditions) and the rows it stands for.
# A loop over containers is shown per user of those containers: the app, the Functions host, the platform.
BY_ASSIGNMENT: dict[Assignment, list[Row]] = {
    (APP, SBDC, "container", "every container", frozenset()): [
        (APP, SBDC, APP_CONTAINERS, "always", TEMPLATES, "the app: images, their records, job records"),
        (APP, SBDC, "containers `azure-webjobs-hosts`, `azure-webjobs-secrets`", "always", TEMPLATES, "the Functions host: its locks and function keys; the app: its scope secret (docs/callers.md)"),
        (APP, SBDC, "the deployment package container", "always", TEMPLATES, "the platform: reads the app's package"),
    ],
    (APP, "Storage Blob Data Reader", "account", "one", frozenset()): [
        (APP, "Storage Blob Data Reader", "storage account", "always", TEMPLATES, "the Functions host: its storage health probe lists containers"),
    ],
    (APP, "Storage Blob Delegator", "account", "one", frozenset()): [
        (APP, "Storage Blob Delegator", "storage account", "always", TEMPLATES, "the app: the user delegation key behind the read-only links"),
    ],
    (APP, "Storage Queue Data Contributor", "queue", "every queue", frozenset()): [
        (APP, "Storage Queue Data Contributor", QUEUES, "always", TEMPLATES, "the Functions host's trigger and poison queue; the app's `:submit` and results"),
    ],
    (APP, "Monitoring Metrics Publisher", "app insights", "one", frozenset()): [
        (APP, "Monitoring Metrics Publisher", "Application Insights", "always", TEMPLATES, "the Functions host: telemetry with Entra ID"),
    ],
    (APP, "Key Vault Secrets User", "secret", "one", frozenset({"keyvault way"})): [
        (APP, "Key Vault Secrets User", "the secret `azure-openai-api-key`", "`keyvault` way", TEMPLATES, "the app: reads the model key"),
    ],
    (APP, "Cognitive Services OpenAI User", "ai account", "one", frozenset({"entra way, account created"})): [
        (APP, "Cognitive Services OpenAI User", "the AI account", "`entra` way, account created by the templates", TEMPLATES, "the app: an Entra ID token for the model"),
    ],
    (CALLER, "Storage Queue Data Message Sender", "job queue", "every caller", frozenset()): [
        (CALLER, "Storage Queue Data Message Sender", "queue `image-jobs`", "listed in `callerPrincipalIds` / `caller_principal_ids`", TEMPLATES, "drops jobs on the queue, nothing else"),
    ],
    (CALLER, "Storage Blob Data Reader", "jobs container", "every caller", frozenset({"key callers"})): [
        (CALLER, "Storage Blob Data Reader", "container `image-jobs`", "listed, key way (`callerAuth` / `caller_auth`)", TEMPLATES, "reads job records (the status of its jobs); the entra way leaves it out, it would show every caller's"),
    ],
    (CALLER, "app role `Images.Caller`", "app registration", "every caller", frozenset({"entra callers"})): [
        (CALLER, "app role `Images.Caller`", REGISTRATION, "listed in `callerPrincipalIds` / `caller_principal_ids`, entra way", TEMPLATES, "calls the HTTP API with an Entra ID token; sees its own jobs, images and records"),
    ],
    (OPERATOR, "app role `Images.Operator`", "app registration", "every operator", frozenset({"entra callers"})): [
        (OPERATOR, "app role `Images.Operator`", REGISTRATION, "listed in `operatorPrincipalIds` / `operator_principal_ids`, and `principalId` / `principal_id`, entra way", TEMPLATES, "sees every caller's jobs, images, records and usage; runs infra/smoke_test.py"),
    ],
    (DEVELOPER, SBDC, "container", "app and host containers", frozenset({"developer"})): [
        (DEVELOPER, SBDC, f"{APP_CONTAINERS}, `azure-webjobs-hosts`, `azure-webjobs-secrets`", "`principalId` / `principal_id` given", TEMPLATES, "runs the app and host locally against the cloud"),
    ],
    (DEVELOPER, "Storage Blob Data Reader", "account", "one", frozenset({"developer"})): [
        (DEVELOPER, "Storage Blob Data Reader", "storage account", "`principalId` / `principal_id` given", TEMPLATES, "the same, for local runs"),
    ],
    (DEVELOPER, "Storage Blob Delegator", "account", "one", frozenset({"developer"})): [
        (DEVELOPER, "Storage Blob Delegator", "storage account", "`principalId` / `principal_id` given", TEMPLATES, "the same, for local runs"),
    ],
    (DEVELOPER, "Storage Queue Data Contributor", "queue", "every queue", frozenset({"developer"})): [
        (DEVELOPER, "Storage Queue Data Contributor", QUEUES, "`principalId` / `principal_id` given", TEMPLATES, "the same; also `az storage message put`"),
    ],
    (DEVELOPER, "Key Vault Secrets User", "secret", "one", frozenset({"developer", "keyvault way"})): [
        (DEVELOPER, "Key Vault Secrets User", "the secret `azure-openai-api-key`", "given, `keyvault` way", TEMPLATES, "the same, for local runs"),
    ],
    (DEVELOPER, "Cognitive Services OpenAI User", "ai account", "one", frozenset({"developer", "entra way, account created"})): [
        (DEVELOPER, "Cognitive Services OpenAI User", "the AI account", "given, `entra` way, account created by the templates", TEMPLATES, "the same, for local runs"),
    ],
}
# What the templates cannot grant, each with why; shown in the same table.
OUTSIDE_THE_TEMPLATES: list[Row] = [
    (APP, "Cognitive Services OpenAI User", "an existing AI account", "`entra` way with an existing endpoint", YOU, "the templates cannot reach an account they did not create"),
    (APP, "Key Vault Secrets User", "the vault (or the secret)", "`key` way with a Key Vault reference", YOU, "the platform resolves the reference with the app's identity; the templates do not offer `key`"),
    (CALLER, "none: the function key", "the function app", "key way: calling the HTTP API", YOU, "header `x-functions-key`, from `az functionapp keys list`"),
    (CALLER, "Storage Queue Data Message Processor", "the results queue", "`IMAGES_RESULTS_QUEUE` set", YOU, "reads and deletes result notifications"),
    (DEPLOYER, "Contributor and Role Based Access Control Administrator (or Owner)", "subscription", "always", YOU, "creates the resource group, the resources and the role assignments"),
    (DEPLOYER, "the right to register applications (every member's unless an admin turned it off; else Application Developer) and Cloud Application Administrator or Application Administrator (Graph: `AppRoleAssignment.ReadWrite.All`)", "the tenant", "entra way (`callerAuth` / `caller_auth`)", YOU, "creates the app registration and assigns its app roles"),
]
IDENTITIES = {
    APP: "**app**: the app's user-assigned managed identity (`id-<token>`), which the app, the Functions host and the platform all use",
    CALLER: "**caller**: a service that calls this one (its managed identity)",
    OPERATOR: "**operator**: a person or service that looks after every caller's work (entra way, optional)",
    DEVELOPER: "**developer**: you or a CI principal, for local runs against the cloud (optional)",
    DEPLOYER: "**deployer**: whoever runs `azd up`, `az deployment` or `terraform apply`",
}


def rows(assignments: set[Assignment]) -> list[Row]:
    """The table's rows for the templates' assignments (by role GUID or name), then what no template grants, by identity."""
    present = {named(a) for a in assignments}
    shown = [row for key, stand_for in BY_ASSIGNMENT.items() if key in present for row in stand_for]
    order = list(IDENTITIES)
    return sorted([*shown, *OUTSIDE_THE_TEMPLATES], key=lambda row: (order.index(row[0]), row[4] != TEMPLATES))


def render_roles(today: dt.date) -> str:
    """Who the identities are, then every role each gets (``today`` is unused: the templates have no date)."""
    lines = ["Identities: " + "; ".join(IDENTITIES.values()) + ".", "", "| Identity | Role | Scope | When | Granted by | For |", "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows(terraform_assignments())]
    return "\n".join(lines)
