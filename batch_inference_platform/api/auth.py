"""Tenant authentication for every client endpoint: ``Authorization: Bearer <key>`` or
``X-API-Key: <key>``, checked against the tenants' key hashes."""

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from batch_inference_platform.api.problems import Problem
from batch_inference_platform.lib.tenants import Tenant, TenantDirectory

_bearer = HTTPBearer(auto_error=False, description="The tenant's API key as a bearer token.")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="The tenant's API key.")


def tenant_dependency(tenants: TenantDirectory) -> Callable[..., Tenant]:
    """A FastAPI dependency giving the calling tenant, or answering 401."""

    def tenant_of(
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        api_key: Annotated[str | None, Depends(_api_key)],
    ) -> Tenant:
        key = bearer.credentials if bearer else api_key
        if not key:
            raise Problem(
                401,
                "Unauthorized",
                "send the API key as 'Authorization: Bearer <key>' or 'X-API-Key'",
                {"WWW-Authenticate": "Bearer"},
            )
        tenant = tenants.authenticate(key)
        if tenant is None:
            raise Problem(401, "Unauthorized", "unknown API key", {"WWW-Authenticate": "Bearer"})
        return tenant

    return tenant_of
