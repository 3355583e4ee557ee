"""OpenAPI 3.1 document of the gateway's v2 and classify endpoints, built from the pydantic models.

Served at /openapi.json so clients and schema fuzzers (schemathesis) see exactly what is validated.
"""

from __future__ import annotations

from typing import Any

from serving.protocol_v2 import ClassifyRequest, InferRequest

ERROR = {"$ref": "#/components/schemas/Error"}


def _responses(*codes: int) -> dict[str, Any]:
    described = {
        "200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}},
        "400": {"description": "Malformed request"},
        "401": {"description": "Missing or unknown API key"},
        "404": {"description": "Unknown model"},
        "408": {"description": "Headers or body not received in time"},
        "413": {"description": "Body (or, with text_limit_action reject, a text) too large"},
        "415": {"description": "Content type is not application/json"},
        "422": {"description": "Invalid request"},
        "431": {"description": "Request headers too large or too many"},
        "429": {"description": "Tenant rate limit; see Retry-After"},
        "503": {"description": "Overloaded, deadline exceeded, not ready or shutting down; see Retry-After"},
    }
    out = {}
    for code in codes:
        entry = dict(described[str(code)])
        if code != 200:
            entry["content"] = {"application/json": {"schema": ERROR}}
        out[str(code)] = entry
    return out


def _schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["error", "code"],
            "properties": {
                "error": {"type": "string"},
                "code": {"type": "string"},
                "retry_after_s": {"type": "number"},
            },
        }
    }
    for model in (InferRequest, ClassifyRequest):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return schemas


def openapi_document(model_name: str, version: str = "0.1.0") -> dict[str, Any]:
    model_param = {
        "name": "model_name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "example": model_name},
    }
    secured = [{"bearer": []}, {"apiKey": []}]
    body = lambda name: {  # noqa: E731 - a tiny local helper keeps the table below readable
        "required": True,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "infopt inference gateway", "version": version},
        "paths": {
            "/v2": {"get": {"operationId": "server_metadata", "responses": _responses(200)}},
            "/v2/health/live": {"get": {"operationId": "server_live", "responses": _responses(200)}},
            "/v2/health/ready": {"get": {"operationId": "server_ready", "responses": _responses(200, 503)}},
            "/v2/models/{model_name}": {
                "get": {"operationId": "model_metadata", "parameters": [model_param], "responses": _responses(200, 404)}
            },
            "/v2/models/{model_name}/ready": {
                "get": {
                    "operationId": "model_ready",
                    "parameters": [model_param],
                    "responses": _responses(200, 404, 503),
                }
            },
            "/v2/models/{model_name}/infer": {
                "post": {
                    "operationId": "model_infer",
                    "parameters": [model_param],
                    "security": secured,
                    "requestBody": body("InferRequest"),
                    "responses": _responses(200, 400, 401, 404, 408, 413, 415, 422, 429, 431, 503),
                }
            },
            "/v1/classify": {
                "post": {
                    "operationId": "classify",
                    "security": secured,
                    "requestBody": body("ClassifyRequest"),
                    "responses": _responses(200, 400, 401, 408, 413, 415, 422, 429, 431, 503),
                }
            },
        },
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
        },
    }
