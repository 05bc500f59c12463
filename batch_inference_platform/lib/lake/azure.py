"""Credentials for Delta tables on Azure (ADLS Gen2 / Blob), as delta-rs storage options,
read from the environment at the moment they are needed - never from configuration files,
never stored in Dagster's resource config.

Modes (``lake.azure-auth``):
- ``account-key``: ``AZURE_STORAGE_ACCOUNT_NAME`` + ``AZURE_STORAGE_ACCOUNT_KEY``
- ``sas``: ``AZURE_STORAGE_ACCOUNT_NAME`` + ``AZURE_STORAGE_SAS_TOKEN``
- ``service-principal``: ``AZURE_STORAGE_ACCOUNT_NAME`` + ``AZURE_CLIENT_ID``,
  ``AZURE_CLIENT_SECRET``, ``AZURE_TENANT_ID``
- ``default-credential``: a token from azure-identity's ``DefaultAzureCredential`` (managed
  identity, workload identity, Azure CLI, ...), for ``AZURE_STORAGE_ACCOUNT_NAME``
- ``none``: only what ``lake.storage-options`` says (e.g. ``use_emulator`` for Azurite).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

AzureAuth = Literal["none", "account-key", "sas", "service-principal", "default-credential"]
STORAGE_SCOPE = "https://storage.azure.com/.default"


class AzureCredentialsError(RuntimeError):
    """A credential the chosen mode needs is missing; the message names the variable."""


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise AzureCredentialsError(f"lake.azure-auth needs the environment variable {name}")
    return value


def storage_options(auth: AzureAuth, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` plus the credentials of ``auth`` (delta-rs / object_store keys)."""
    options = dict(base or {})
    if auth == "none":
        return options
    if "account_name" not in options:
        options["account_name"] = _env("AZURE_STORAGE_ACCOUNT_NAME")
    if auth == "account-key":
        options["account_key"] = _env("AZURE_STORAGE_ACCOUNT_KEY")
    elif auth == "sas":
        options["sas_token"] = _env("AZURE_STORAGE_SAS_TOKEN")
    elif auth == "service-principal":
        options["client_id"] = _env("AZURE_CLIENT_ID")
        options["client_secret"] = _env("AZURE_CLIENT_SECRET")
        options["tenant_id"] = _env("AZURE_TENANT_ID")
    else:
        from azure.identity import DefaultAzureCredential

        options["bearer_token"] = DefaultAzureCredential().get_token(STORAGE_SCOPE).token
    return options
