"""The real-time read path: a customer's current precomputed recommendation from Redis."""

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from batch_inference_platform.api.auth import tenant_dependency
from batch_inference_platform.api.problems import Problem
from batch_inference_platform.lib.realtime.cache import RecommendationCache
from batch_inference_platform.lib.tenants import Tenant, TenantDirectory


class RecommendationView(BaseModel):
    """What a real-time service reads: the action, why, the model behind it and its age."""

    customer_id: int
    next_best_action: str
    reason: str
    risk_score: float | None
    model_name: str
    model_version: int
    window_start: str
    window_end: str
    generated_at: str
    age_seconds: float
    cache_version: str


def recommendations_router(cache: RecommendationCache, tenants: TenantDirectory) -> APIRouter:
    router = APIRouter(prefix="/api/v1/customers", tags=["recommendations"])
    tenant_of = tenant_dependency(tenants)

    @router.get("/{customer_id}/recommendation", response_model=RecommendationView)
    def recommendation(
        customer_id: int, tenant: Annotated[Tenant, Depends(tenant_of)]
    ) -> RecommendationView:
        """The customer's recommendation in the current cache version (404 if none); only for
        tenants allowed to read recommendations."""
        if not tenant.read_recommendations:
            raise Problem(403, "Forbidden", f"tenant {tenant.id!r} may not read recommendations")
        found = cache.current(customer_id)
        if found is None:
            raise Problem(404, "Not found", f"no current recommendation for {customer_id}")
        i = found.insight
        return RecommendationView(
            customer_id=i.customer_id,
            next_best_action=i.next_best_action,
            reason=i.reason,
            risk_score=i.risk_score,
            model_name=i.model_name,
            model_version=i.model_version,
            window_start=i.window_start.isoformat(),
            window_end=i.window_end.isoformat(),
            generated_at=i.generated_at.isoformat(),
            age_seconds=round(found.age_seconds, 3),
            cache_version=found.cache_version,
        )

    return router
