"""Wire formats: one versioned definition per format. JSON in and out via msgspec."""

from schemas.events import PREDICTION_EVENT_VERSION, PredictionEvent
from schemas.request import RiskAssessmentRequest, parse_request
from schemas.response import (
    BatchResponse,
    ErrorResponse,
    FieldError,
    ReasonCode,
    RiskAssessmentResponse,
)

__all__ = [
    "PREDICTION_EVENT_VERSION",
    "BatchResponse",
    "ErrorResponse",
    "FieldError",
    "PredictionEvent",
    "ReasonCode",
    "RiskAssessmentRequest",
    "RiskAssessmentResponse",
    "parse_request",
]
