"""Wire formats: one versioned definition per format. JSON in and out via msgspec."""

from schemas.request import RiskAssessmentRequest, parse_request

__all__ = ["RiskAssessmentRequest", "parse_request"]
