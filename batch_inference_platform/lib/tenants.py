"""Tenants of the client API: who they are (an API key, stored only as its SHA-256), which
deployments they may use, what they may read, where they may write, and how much of the
platform they may use at once."""

from __future__ import annotations

import hashlib
import hmac
import posixpath
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from batch_inference_platform.lib.deployments.spec import NAME_PATTERN

Priority = Literal["normal", "high", "urgent"]
PRIORITY_TAG_VALUE: dict[str, int] = {"normal": 0, "high": 5, "urgent": 10}
"""``dagster/priority`` per request priority (higher runs first in the run queue)."""
_TABLE_NAME = re.compile(r"[a-z0-9_][a-z0-9_\-]*(/[a-z0-9_][a-z0-9_\-]*)*")


class TenantsError(ValueError):
    """The tenants file is missing or invalid; the message names the file and the entry."""


class AccessDenied(PermissionError):
    """A tenant asked for a deployment it may not use, a table it may not read or a place it
    may not write."""


class Tenant(BaseModel):
    """One tenant and its limits."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{1,62}$")
    api_key_sha256: str = Field(alias="api-key-sha256", pattern=r"^[0-9a-f]{64}$")
    default_priority: Priority = Field(alias="default-priority")
    max_concurrent_runs: int = Field(alias="max-concurrent-runs", ge=1)
    allowed_deployments: tuple[str, ...] = Field(alias="allowed-deployments")
    """The deployments (``defs/deployments/<name>``) whose models the tenant may request."""
    allowed_input_tables: tuple[str, ...] = Field(alias="allowed-input-tables")
    output_root: str = Field(alias="output-root", min_length=1)
    read_recommendations: bool = Field(default=False, alias="read-recommendations")
    """May read customers' precomputed recommendations (the real-time read path)."""
    local_only: bool = Field(default=False, alias="local-only")
    """A demo tenant: ignored outside ``environment: local`` (its key may be public)."""

    @field_validator("allowed_deployments")
    @classmethod
    def _deployment_names(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        for name in names:
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"{name!r} is not a deployment name (lower case, digits, _)")
        return names

    @field_validator("allowed_input_tables")
    @classmethod
    def _table_names(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        for name in names:
            if not _TABLE_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a table name (lower-case path segments)")
        return names

    def deployment(self, name: str) -> str:
        """The deployment name if this tenant may use it; otherwise ``AccessDenied``."""
        if name not in self.allowed_deployments:
            raise AccessDenied(f"tenant {self.id!r} may not use deployment {name!r}")
        return name

    def input_table(self, name: str) -> str:
        """The table name if this tenant may read it; otherwise ``AccessDenied``."""
        if name not in self.allowed_input_tables:
            raise AccessDenied(f"tenant {self.id!r} may not read table {name!r}")
        return name

    def output_uri(self, table: str) -> str:
        """Where ``table`` lives under this tenant's output root; a name that would leave the
        root (absolute, ``..``, a URI) is refused with ``AccessDenied``."""
        if not _TABLE_NAME.fullmatch(table) or posixpath.normpath(table) != table:
            raise AccessDenied(
                f"output table {table!r} is not a table name under tenant {self.id!r}'s root"
            )
        return f"{self.output_root.rstrip('/')}/{table}"


class TenantDirectory:
    """All tenants, looked up by API key in constant time per tenant."""

    def __init__(self, tenants: list[Tenant]) -> None:
        ids = [t.id for t in tenants]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise TenantsError(f"duplicate tenant ids: {', '.join(duplicates)}")
        self.tenants = {t.id: t for t in tenants}

    def authenticate(self, api_key: str) -> Tenant | None:
        """The tenant whose key this is, or None."""
        digest = hash_api_key(api_key)
        found = None
        for tenant in self.tenants.values():  # compare with every tenant: no early exit
            if hmac.compare_digest(digest, tenant.api_key_sha256):
                found = tenant
        return found

    def get(self, tenant_id: str) -> Tenant | None:
        return self.tenants.get(tenant_id)


def hash_api_key(api_key: str) -> str:
    """What the tenants file stores for a key (keys are random, so SHA-256 suffices)."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def load_tenants(path: Path, lake_root: str, environment: str = "local") -> TenantDirectory:
    """Read the tenants file; relative output roots are under ``lake_root``; tenants marked
    ``local-only`` exist only in the ``local`` environment."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as error:
        raise TenantsError(f"{path}: cannot read the tenants file: {error}") from error
    except yaml.YAMLError as error:
        raise TenantsError(f"{path}: not valid YAML: {error}") from error
    entries = data.get("tenants") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise TenantsError(f"{path}: expected a top-level 'tenants:' list")
    tenants = []
    for index, entry in enumerate(entries):
        try:
            tenant = Tenant.model_validate(entry)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
            )
            raise TenantsError(f"{path}: tenants[{index}]: {problems}") from None
        if tenant.local_only and environment != "local":
            continue
        if "://" not in tenant.output_root and not tenant.output_root.startswith("/"):
            root = f"{lake_root.rstrip('/')}/{tenant.output_root}"
            tenant = tenant.model_copy(update={"output_root": root})
        tenants.append(tenant)
    return TenantDirectory(tenants)
