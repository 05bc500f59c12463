"""The real-time read path: a customer's current precomputed recommendation from Redis."""

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel
from redis.exceptions import RedisError

from batch_inference_platform.api.auth import tenant_dependency
from batch_inference_platform.api.problems import Problem, log_reason
from batch_inference_platform.lib.realtime.cache import RecommendationCache
from batch_inference_platform.lib.tenants import Tenant, TenantDirectory

logger = logging.getLogger(__name__)


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
        customer_id: Annotated[int, Path(ge=0, le=2**63 - 1)],
        tenant: Annotated[Tenant, Depends(tenant_of)],
    ) -> RecommendationView:
        """The customer's recommendation in the current cache version (404 if none); only for
        tenants allowed to read recommendations."""
        if not tenant.read_recommendations:
            raise Problem(403, "Forbidden", f"tenant {tenant.id!r} may not read recommendations")
        try:
            found = cache.current(customer_id)
        except RedisError as error:
            logger.warning("recommendation cache unavailable: %s", log_reason(error))
            raise Problem(
                503,
                "Unavailable",
                "the recommendation cache is unavailable; try again later",
                {"Retry-After": "5"},
            ) from None
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
