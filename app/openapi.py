"""OpenAPI 3.1 document generated from the msgspec schemas in ``schemas/`` (never written by hand)."""

from __future__ import annotations

from typing import Any

import msgspec

from schemas.outcomes import OutcomeAccepted, batch_outcome_type
from schemas.request import RiskAssessmentRequest, batch_request_type
from schemas.response import BatchResponse, ErrorResponse, RiskAssessmentResponse


def _json(ref: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Malformed JSON",
        401: "Missing or invalid API key",
        413: "Body too large",
        422: "Invalid fields (every bad field path is listed)",
        503: "Not stored (Redis unavailable); send again",
    }
    return {str(c): {"description": text[c], **_json("ErrorResponse")} for c in codes}


def openapi_document(batch_max: int, outcomes_max: int = 10_000) -> dict[str, Any]:
    """The API description served at ``/openapi.json`` (``batch_max``, ``outcomes_max``: the configured caps)."""
    _, components = msgspec.json.schema_components(
        [
            RiskAssessmentRequest,
            batch_request_type(batch_max),
            RiskAssessmentResponse,
            BatchResponse,
            ErrorResponse,
            batch_outcome_type(outcomes_max),
            OutcomeAccepted,
        ],
        ref_template="#/components/schemas/{name}",
    )
    security: list[dict[str, list[str]]] = [{"ApiKey": []}, {"Bearer": []}]
    return {
        "openapi": "3.1.0",
        "info": {"title": "BNPL risk decisions", "version": "1"},
        "components": {
            "schemas": components,
            "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "Bearer": {"type": "http", "scheme": "bearer"},
            },
        },
        "paths": {
            "/v1/bnpl/risk-assessment": {
                "post": {
                    "summary": "Decide one BNPL application",
                    "security": security,
                    "requestBody": {"required": True, **_json("RiskAssessmentRequest")},
                    "responses": {
                        "200": {"description": "Decision", **_json("RiskAssessmentResponse")},
                        **_errors(400, 401, 413, 422),
                    },
                }
            },
            "/v1/bnpl/risk-assessment/batch": {
                "post": {
                    "summary": f"Decide up to {batch_max:,} applications in order",
                    "security": security,
                    "requestBody": {"required": True, **_json("BatchRequest")},
                    "responses": {
                        "200": {"description": "Decisions", **_json("BatchResponse")},
                        **_errors(400, 401, 413, 422),
                    },
                }
            },
            "/v1/bnpl/outcomes": {
                "post": {
                    "summary": f"Record up to {outcomes_max:,} loan outcomes (paid, defaulted, charged_off, "
                    "partially_paid); safe to re-send",
                    "security": security,
                    "requestBody": {"required": True, **_json("OutcomeBatch")},
                    "responses": {
                        "202": {"description": "Stored in the outcome stream", **_json("OutcomeAccepted")},
                        **_errors(400, 401, 413, 422, 503),
                    },
                }
            },
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "alive"}}}},
            "/readyz": {
                "get": {
                    "summary": "Readiness: models loaded, or degraded (fallback policy)",
                    "responses": {
                        "200": {"description": "ready or degraded"},
                        "503": {"description": "degraded and ?strict=1"},
                    },
                }
            },
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text"}}}},
        },
    }
