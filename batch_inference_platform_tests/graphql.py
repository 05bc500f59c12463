"""A minimal client of the Dagster webserver's GraphQL API, for tests that drive `dagster dev`
as the UI does."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any


class GraphQL:
    """A minimal client of the Dagster webserver's GraphQL API."""

    def __init__(self, url: str) -> None:
        self.url = url + "/graphql"

    def __call__(self, query: str, **variables: Any) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": variables}).encode()
        request = urllib.request.Request(
            self.url, body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.load(response)
        assert not answer.get("errors"), answer["errors"]
        return answer["data"]

    def wait(self, what: str, until: Callable[[], Any], timeout: float, every: float = 2) -> Any:
        """Poll ``until()`` until it returns something truthy."""
        deadline = time.monotonic() + timeout
        while not (found := until()):
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(every)
        return found

    def runs(self, tags: dict[str, str]) -> list[dict[str, Any]]:
        """Runs with all of ``tags``: id, status, start time and tags."""
        data = self(
            "query($filter: RunsFilter) { runsOrError(filter: $filter) { ... on Runs { results {"
            " runId status startTime tags { key value } } } } }",
            filter={"tags": [{"key": k, "value": v} for k, v in tags.items()]},
        )
        return data["runsOrError"]["results"]
