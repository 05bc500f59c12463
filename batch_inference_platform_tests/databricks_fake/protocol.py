"""Databricks REST error shapes and request-parameter helpers shared by the fake's services."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

Json = dict[str, Any]
Params = Mapping[str, Any]
Route = Callable[[Params], Json]


class ApiError(Exception):
    """An error answered as Databricks does: an HTTP status and ``{"error_code", "message"}``."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(f"{status} {error_code}: {message}")
        self.status = status
        self.error_code = error_code
        self.message = message

    def body(self) -> Json:
        """The JSON body the SDK's error parser maps to its typed exceptions."""
        return {"error_code": self.error_code, "message": self.message}


def invalid_parameter(message: str) -> ApiError:
    """400 INVALID_PARAMETER_VALUE (the SDK raises ``InvalidParameterValue``)."""
    return ApiError(400, "INVALID_PARAMETER_VALUE", message)


def does_not_exist(message: str) -> ApiError:
    """404 RESOURCE_DOES_NOT_EXIST (the SDK raises ``ResourceDoesNotExist``)."""
    return ApiError(404, "RESOURCE_DOES_NOT_EXIST", message)


def already_exists(message: str) -> ApiError:
    """409 RESOURCE_ALREADY_EXISTS (the SDK raises ``ResourceAlreadyExists``)."""
    return ApiError(409, "RESOURCE_ALREADY_EXISTS", message)


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds, the unit of every Databricks timestamp."""
    return int(time.time() * 1000)


def str_param(params: Params, name: str) -> str:
    """A required string field of a JSON body or query string."""
    value = params.get(name)
    if value is None or value == "":
        raise invalid_parameter(f"Missing required field: {name}")
    if not isinstance(value, str):
        raise invalid_parameter(f"Invalid value for {name}: expected a string")
    return value


def int_param(params: Params, name: str, default: int | None = None) -> int:
    """An integer field; query strings carry it as text."""
    value = params.get(name)
    if value is None:
        if default is None:
            raise invalid_parameter(f"Missing required field: {name}")
        return default
    if isinstance(value, bool):
        raise invalid_parameter(f"Invalid value for {name}: expected an integer")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise invalid_parameter(f"Invalid value for {name}: {value!r} is not an integer") from None


def bool_param(params: Params, name: str) -> bool:
    """A boolean field; the SDK sends ``"true"``/``"false"`` in query strings."""
    value = params.get(name, False)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise invalid_parameter(f"Invalid value for {name}: {value!r} is not a boolean")
