"""Whether a model's input signature can be fed from a table's schema."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
from mlflow.models.signature import ModelSignature
from mlflow.types.schema import ColSpec

from batch_inference_platform.lib.scoring.inputs import UnsupportedSignatureError, plan_inputs

_ACCEPTS: dict[str, Callable[[pa.DataType], bool]] = {
    "double": lambda t: pa.types.is_floating(t) or pa.types.is_integer(t),
    "float": lambda t: (
        pa.types.is_float32(t)
        or pa.types.is_float16(t)
        or pa.types.is_int8(t)
        or pa.types.is_int16(t)
    ),
    "long": lambda t: pa.types.is_integer(t) and not pa.types.is_uint64(t),
    "integer": lambda t: pa.types.is_int8(t) or pa.types.is_int16(t) or pa.types.is_int32(t),
    "boolean": pa.types.is_boolean,
    "string": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
    "datetime": lambda t: pa.types.is_timestamp(t) or pa.types.is_date(t),
    "binary": lambda t: pa.types.is_binary(t) or pa.types.is_large_binary(t),
}


def signature_problems(signature: ModelSignature | None, schema: pa.Schema) -> list[str]:
    """Why rows of ``schema`` cannot be scored by a model with ``signature`` (empty if they can).

    A column fits when the table's type converts to the signature's type without loss
    (int32 -> double is fine, double -> long is not). Optional signature inputs may be absent.
    """
    try:
        plan_inputs(signature, takes_matrix=False)
    except UnsupportedSignatureError as error:
        return [str(error)]
    assert signature is not None and signature.inputs is not None
    problems = []
    for spec in signature.inputs.inputs:
        if not isinstance(spec, ColSpec) or spec.name is None:
            problems.append(f"input {spec!r} is not a named column")
            continue
        type_name = getattr(spec.type, "name", str(spec.type))
        index = schema.get_field_index(spec.name)
        if index < 0:
            if spec.required:
                problems.append(f"input {spec.name!r} ({type_name}) is not in the table")
            continue
        actual = schema.field(index).type
        if pa.types.is_dictionary(actual):
            actual = actual.value_type
        accepts = _ACCEPTS.get(type_name)
        if accepts is None or not accepts(actual):
            problems.append(f"input {spec.name!r} needs {type_name}, the table has {actual}")
    return problems


def input_names(signature: ModelSignature) -> list[str]:
    """The model's input column names, in signature order."""
    assert signature.inputs is not None
    specs = signature.inputs.inputs
    return [spec.name for spec in specs if isinstance(spec, ColSpec) and spec.name]


def signature_inputs(signature: ModelSignature | None) -> dict[str, tuple[str, bool]]:
    """The model's named column inputs: ``{name: (mlflow type, required)}``, in order (what a
    deployment without a declared contract validates against)."""
    if signature is None or signature.inputs is None:
        raise UnsupportedSignatureError("the model has no input signature")
    inputs = {}
    for spec in signature.inputs.inputs:
        if isinstance(spec, ColSpec) and spec.name:
            inputs[spec.name] = (getattr(spec.type, "name", str(spec.type)), spec.required)
    return inputs
