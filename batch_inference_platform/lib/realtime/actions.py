"""The next best action for a customer, from their risk score and their window's activity.

Rules, first match wins (thresholds are business choices, kept here in one place):
1. two or more declined transactions and risk >= 0.3 -> offer a payment plan
2. two or more support contacts -> proactive support call
3. an application started but not submitted and risk < 0.2 -> nudge to complete it
4. a declined credit decision and risk < 0.15 -> manual review (the decision looks too strict)
5. an offer viewed and risk < 0.2 -> pre-approved limit increase
otherwise no action.
"""

from __future__ import annotations

from collections.abc import Mapping


def next_best_action(activity: Mapping[str, float], risk: float | None) -> tuple[str, str]:
    """(action, reason) for one customer."""
    r = 1.0 if risk is None else risk  # unknown risk: never offer credit
    if activity["declined_transactions"] >= 2 and r >= 0.3:
        return (
            "offer_payment_plan",
            f"{activity['declined_transactions']:.0f} declined, risk {r:.2f}",
        )
    if activity["support_contacts"] >= 2:
        return "proactive_support_call", f"{activity['support_contacts']:.0f} support contacts"
    if activity["applications_started"] > activity["applications_submitted"] and r < 0.2:
        return "nudge_complete_application", f"application started, not submitted; risk {r:.2f}"
    if activity["decisions_declined"] >= 1 and r < 0.15:
        return "manual_review_offer", f"declined although risk is {r:.2f}"
    if activity["offers_viewed"] >= 1 and r < 0.2:
        return "preapproved_limit_increase", f"offer viewed, risk {r:.2f}"
    return "no_action", "nothing to act on"
