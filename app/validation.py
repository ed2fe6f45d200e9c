"""Request decoding with clear errors: 400 for malformed JSON, 422 listing **every** invalid field path.

The common case is one msgspec pass straight into the struct. Only when that fails is the body decoded untyped and
every field checked on its own, so the client sees all problems at once (msgspec stops at the first).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from schemas.request import RiskAssessmentRequest, batch_request_type
from schemas.response import ErrorResponse, FieldError

_REQUEST = msgspec.json.Decoder(RiskAssessmentRequest)
_ANY = msgspec.json.Decoder()
_FIELDS = msgspec.structs.fields(RiskAssessmentRequest)


class RequestError(Exception):
    """A client error with its HTTP status and JSON body."""

    def __init__(self, status: int, error: str, message: str, fields: list[FieldError] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = ErrorResponse(error=error, message=message, fields=fields or [])


def _message(exc: msgspec.ValidationError) -> str:
    text = str(exc)
    return text.split(" - at `", 1)[0]


def request_errors(obj: Any, path: str = "$") -> list[FieldError]:
    """Every problem of one request object, each with its JSON path."""
    if not isinstance(obj, dict):
        return [FieldError(path, f"Expected `object`, got `{type(obj).__name__}`")]
    errors: list[FieldError] = []
    for field in _FIELDS:
        where = f"{path}.{field.encode_name}"
        if field.encode_name not in obj:
            errors.append(FieldError(where, "Object missing required field"))
            continue
        try:
            msgspec.convert(obj[field.encode_name], field.type)
        except msgspec.ValidationError as exc:
            errors.append(FieldError(where, _message(exc)))
            continue
        if field.name == "transaction_timestamp":
            try:
                datetime.fromisoformat(obj[field.encode_name])
            except ValueError:
                errors.append(FieldError(where, "Invalid date or time"))
    return errors


def _fail(errors: list[FieldError], fallback: msgspec.ValidationError) -> RequestError:
    if not errors:
        errors = [FieldError("$", _message(fallback))]
    return RequestError(422, "validation_error", f"{len(errors)} invalid field(s)", errors)


def _malformed(exc: msgspec.DecodeError) -> RequestError:
    return RequestError(400, "malformed_json", f"Request body is not valid JSON: {exc}")


def _untyped(body: bytes) -> Any:
    # A typed decode can fail on a type error before it reaches a syntax error further on: check syntax first.
    try:
        return _ANY.decode(body)
    except msgspec.DecodeError as exc:
        raise _malformed(exc) from None


def decode_request(body: bytes) -> RiskAssessmentRequest:
    """Decode one request or raise :class:`RequestError` (400 malformed JSON, 422 invalid fields)."""
    try:
        return _REQUEST.decode(body)
    except msgspec.ValidationError as exc:
        raise _fail(request_errors(_untyped(body)), exc) from None
    except msgspec.DecodeError as exc:
        raise _malformed(exc) from None


class BatchDecoder:
    """Decodes batch bodies ``{"requests": [...]}`` of 1 … ``limit`` items (``BNPL_BATCH_MAX``)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.body_type = batch_request_type(limit)
        self._decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(self.body_type)

    def decode(self, body: bytes) -> list[RiskAssessmentRequest]:
        """The requests of a batch body, or :class:`RequestError` (400 malformed JSON, 422 invalid fields)."""
        limit = self.limit
        try:
            requests: list[RiskAssessmentRequest] = self._decoder.decode(body).requests
        except msgspec.ValidationError as exc:
            obj = _untyped(body)
            if not isinstance(obj, dict) or not isinstance(obj.get("requests"), list):
                errors = [FieldError("$.requests", "Expected `array` of requests")]
            elif not 1 <= len(obj["requests"]) <= limit:
                errors = [FieldError("$.requests", f"Expected 1 to {limit} requests, got {len(obj['requests'])}")]
            else:
                errors = [e for i, item in enumerate(obj["requests"]) for e in request_errors(item, f"$.requests[{i}]")]
            raise _fail(errors, exc) from None
        except msgspec.DecodeError as exc:
            raise _malformed(exc) from None
        return requests
