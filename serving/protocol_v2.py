"""Open Inference Protocol (KServe v2) for the text classifier: request parsing, validation, responses.

Inputs: `input_ids` (+ optional `attention_mask`) INT64 of shape [B, T], or `text` BYTES of shape [B]
(or [B, 1]). Outputs: `logits` FP32 [B, C] and `label` BYTES [B]. Only the JSON tensor encoding is
supported; a binary-extension request is refused with 400, not misread.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from serving.errors import BadRequest

OUTPUT_NAMES = ("logits", "label")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RequestInput(_Model):
    name: Literal["input_ids", "attention_mask", "text"]
    shape: list[int] = Field(min_length=1, max_length=2)
    datatype: Literal["INT64", "BYTES"]
    data: list[Any]
    parameters: dict[str, Any] | None = None


class RequestOutput(_Model):
    name: Literal["logits", "label"]
    parameters: dict[str, Any] | None = None


class InferRequest(_Model):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(min_length=1, max_length=3)
    outputs: list[RequestOutput] | None = None


class ClassifyRequest(_Model):
    texts: list[str] = Field(min_length=1)


class ParsedInfer:
    """Either texts or a token batch, plus which outputs to return."""

    def __init__(
        self,
        request_id: str | None,
        outputs: tuple[str, ...],
        texts: list[str] | None = None,
        input_ids: np.ndarray | None = None,
        attention_mask: np.ndarray | None = None,
    ) -> None:
        self.request_id = request_id
        self.outputs = outputs
        self.texts = texts
        self.input_ids = input_ids
        self.attention_mask = attention_mask

    @property
    def rows(self) -> int:
        return len(self.texts) if self.texts is not None else int(self.input_ids.shape[0])  # type: ignore[union-attr]


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(part) for part in item["loc"]) or "(body)"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def _int_tensor(tensor: RequestInput) -> np.ndarray:
    """An INT64 [B, T] tensor; data flat (row-major, B*T values) or nested exactly as the shape."""
    if tensor.datatype != "INT64":
        raise BadRequest(f"input {tensor.name!r} must be INT64, got {tensor.datatype}", status=422)
    if len(tensor.shape) != 2 or min(tensor.shape) < 1:
        raise BadRequest(f"input {tensor.name!r} must have shape [B, T] with B, T >= 1; got {tensor.shape}", status=422)
    try:
        array = np.asarray(tensor.data)
    except ValueError as error:
        raise BadRequest(f"input {tensor.name!r}: ragged data ({error})", status=422) from None
    if array.size and array.dtype.kind not in "iu":
        raise BadRequest(f"input {tensor.name!r}: data must be integers, got {array.dtype.kind!r} values", status=422)
    rows, cols = tensor.shape
    if array.shape not in ((rows * cols,), (rows, cols)):
        raise BadRequest(
            f"input {tensor.name!r}: shape {tensor.shape} needs {rows * cols} values, flat or nested as "
            f"[{rows}][{cols}]; got data of shape {list(array.shape)}",
            status=422,
        )
    try:
        return array.astype(np.int64).reshape(rows, cols)
    except OverflowError:
        raise BadRequest(f"input {tensor.name!r}: values do not fit INT64", status=422) from None


def _texts(tensor: RequestInput) -> list[str]:
    """BYTES [B] (B strings) or [B, 1] (B strings, flat or each in its own one-element list)."""
    if tensor.datatype != "BYTES":
        raise BadRequest(f"input 'text' must be BYTES, got {tensor.datatype}", status=422)
    shape = tensor.shape
    if shape[0] < 1 or (len(shape) == 2 and shape[1] != 1):
        raise BadRequest(f"input 'text' must have shape [B] or [B, 1] with B >= 1; got {shape}", status=422)
    data = tensor.data
    if len(shape) == 2 and data and all(isinstance(value, list) for value in data):
        if not all(len(value) == 1 for value in data):
            raise BadRequest(f"input 'text': shape {shape} needs one string per row", status=422)
        data = [value[0] for value in data]
    if len(data) != shape[0] or not all(isinstance(value, str) for value in data):
        raise BadRequest(
            f"input 'text': shape {shape} needs {shape[0]} strings (flat), got {str(tensor.data[:3])[:120]}...",
            status=422,
        )
    return list(data)


def parse_infer(body: bytes, *, max_rows: int) -> ParsedInfer:
    """Validate a v2 infer body; every problem becomes a 400/422 naming the field."""
    try:
        request = InferRequest.model_validate_json(body)
    except ValidationError as error:
        json_invalid = any(item["type"] == "json_invalid" for item in error.errors())
        raise BadRequest(
            f"invalid JSON: {_describe(error)}" if json_invalid else f"invalid v2 request: {_describe(error)}",
            status=400 if json_invalid else 422,
        ) from None
    by_name: dict[str, RequestInput] = {}
    for tensor in request.inputs:
        if tensor.name in by_name:
            raise BadRequest(f"input {tensor.name!r} given twice", status=422)
        by_name[tensor.name] = tensor
    outputs = tuple(dict.fromkeys(o.name for o in request.outputs)) if request.outputs else OUTPUT_NAMES
    if "text" in by_name:
        if len(by_name) > 1:
            raise BadRequest("give either 'text' or 'input_ids' (+ 'attention_mask'), not both", status=422)
        parsed = ParsedInfer(request.id, outputs, texts=_texts(by_name["text"]))
    elif "input_ids" in by_name:
        input_ids = _int_tensor(by_name["input_ids"])
        if "attention_mask" in by_name:
            attention_mask = _int_tensor(by_name["attention_mask"])
            if attention_mask.shape != input_ids.shape:
                raise BadRequest(
                    f"attention_mask shape {list(attention_mask.shape)} != input_ids shape {list(input_ids.shape)}",
                    status=422,
                )
        else:
            attention_mask = np.ones_like(input_ids)
        parsed = ParsedInfer(request.id, outputs, input_ids=input_ids, attention_mask=attention_mask)
    else:
        raise BadRequest("missing input: give 'input_ids' (INT64 [B, T]) or 'text' (BYTES [B])", status=422)
    if parsed.rows > max_rows:
        raise BadRequest(f"batch of {parsed.rows} rows exceeds this model's max_batch_size {max_rows}", status=422)
    return parsed


def parse_classify(body: bytes, *, max_rows: int) -> list[str]:
    try:
        request = ClassifyRequest.model_validate_json(body)
    except ValidationError as error:
        json_invalid = any(item["type"] == "json_invalid" for item in error.errors())
        raise BadRequest(f"invalid classify request: {_describe(error)}", status=400 if json_invalid else 422) from None
    if len(request.texts) > max_rows:
        raise BadRequest(f"{len(request.texts)} texts exceed this model's max_batch_size {max_rows}", status=422)
    return request.texts


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def infer_response(
    model_name: str,
    request_id: str | None,
    logits: np.ndarray,
    labels: tuple[str, ...],
    outputs: tuple[str, ...],
    truncated: list[bool] | None = None,
) -> dict[str, Any]:
    """The v2 response; `truncated` (text inputs) says per row whether its text was cut."""
    predicted = [labels[index] if index < len(labels) else str(index) for index in logits.argmax(axis=-1).tolist()]
    tensors = {
        "logits": {
            "name": "logits",
            "datatype": "FP32",
            "shape": list(logits.shape),
            "data": logits.reshape(-1).tolist(),
        },
        "label": {"name": "label", "datatype": "BYTES", "shape": [len(predicted)], "data": predicted},
    }
    body: dict[str, Any] = {
        "model_name": model_name,
        "model_version": "1",
        "outputs": [tensors[name] for name in outputs],
    }
    if request_id is not None:
        body["id"] = request_id
    if truncated is not None:
        body["parameters"] = {"truncated": truncated}
    return body


def model_metadata(model_name: str, platform: str, num_labels: int) -> dict[str, Any]:
    return {
        "name": model_name,
        "versions": ["1"],
        "platform": platform,
        "inputs": [
            {"name": "input_ids", "datatype": "INT64", "shape": [-1, -1]},
            {"name": "attention_mask", "datatype": "INT64", "shape": [-1, -1]},
            {"name": "text", "datatype": "BYTES", "shape": [-1]},
        ],
        "outputs": [
            {"name": "logits", "datatype": "FP32", "shape": [-1, num_labels]},
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
        ],
    }
