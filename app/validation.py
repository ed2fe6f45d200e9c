"""Request decoding with clear errors: 400 for malformed input, 422 listing **every** invalid field path.

The common case is one msgspec pass straight into the struct. Only when that fails is the body decoded untyped and
every field checked on its own, so the client sees all problems at once (msgspec stops at the first).

Malformed bytes are 400s, never 500s: JSON syntax errors, invalid UTF-8, and nesting deeper than the configured
limit (``BNPL_MAX_JSON_DEPTH``; the request itself is one level deep, a batch three), which is checked before any
decoding so a deeply nested body costs a byte count, not a recursion.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Final

import msgspec
import numpy as np

from schemas.request import RiskAssessmentRequest, batch_request_type
from schemas.response import ErrorResponse, FieldError

_REQUEST = msgspec.json.Decoder(RiskAssessmentRequest)
_ANY = msgspec.json.Decoder()
_FIELDS = msgspec.structs.fields(RiskAssessmentRequest)


#: Default nesting limit (the request is 1 level deep, a batch 3).
MAX_DEPTH: Final = 32
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"')  # a JSON string, escapes included
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = np.zeros(256, dtype=np.int64)
_STEP[list(b"[{")] = 1
_STEP[list(b"]}")] = -1


def json_depth(body: bytes) -> int:
    """How deeply the arrays and objects of ``body`` nest (brackets inside strings do not count).

    >>> json_depth(b'{"a": [1, {"b": "[[["}]}'), json_depth(b"7")
    (3, 0)
    """
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    return int(np.cumsum(_STEP[np.frombuffer(brackets, dtype=np.uint8)]).max())


class RequestError(Exception):
    """A client error with its HTTP status and JSON body; ``close`` ends the connection after the answer."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        fields: list[FieldError] | None = None,
        *,
        headers: dict[str, str] | None = None,
        close: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = ErrorResponse(error=error, message=message, fields=fields or [])
        self.headers = headers
        self.close = close


def check_depth(body: bytes, limit: int) -> None:
    """400 when ``body`` nests deeper than ``limit``; a body with few brackets is not scanned at all."""
    if body.count(b"{") + body.count(b"[") > limit and json_depth(body) > limit:
        raise RequestError(400, "too_deep", f"Request body nests deeper than {limit} levels")


def _invalid_utf8(exc: UnicodeDecodeError) -> RequestError:
    return RequestError(400, "invalid_utf8", f"Request body is not valid UTF-8 (byte {exc.start} of a string)")


def _too_deep() -> RequestError:
    return RequestError(400, "too_deep", "Request body nests too deeply")


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


@contextmanager
def _malformed_bytes() -> Iterator[None]:
    """What malformed bytes raise inside a decoder, as 400s (type and range errors pass through: they are 422s)."""
    try:
        yield
    except msgspec.ValidationError:
        raise
    except msgspec.DecodeError as exc:
        raise _malformed(exc) from None
    except UnicodeDecodeError as exc:
        raise _invalid_utf8(exc) from None
    except RecursionError:
        raise _too_deep() from None


def _untyped(body: bytes) -> Any:
    # A typed decode can fail on a type error before it reaches a syntax error further on: check syntax first.
    with _malformed_bytes():
        return _ANY.decode(body)


def decode_request(body: bytes, max_depth: int = MAX_DEPTH) -> RiskAssessmentRequest:
    """Decode one request or raise :class:`RequestError` (400 malformed, 422 invalid fields)."""
    check_depth(body, max_depth)
    with _malformed_bytes():
        try:
            return _REQUEST.decode(body)
        except msgspec.ValidationError as exc:
            raise _fail(request_errors(_untyped(body)), exc) from None


class BatchDecoder:
    """Decodes batch bodies ``{"requests": [...]}`` of 1 … ``limit`` items (``BNPL_BATCH_MAX``)."""

    def __init__(self, limit: int, max_depth: int = MAX_DEPTH) -> None:
        self.limit = limit
        self.max_depth = max_depth
        self.body_type = batch_request_type(limit)
        self._decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(self.body_type)

    def decode(self, body: bytes) -> list[RiskAssessmentRequest]:
        """The requests of a batch body, or :class:`RequestError` (400 malformed JSON, 422 invalid fields)."""
        limit = self.limit
        check_depth(body, self.max_depth)
        with _malformed_bytes():
            try:
                requests: list[RiskAssessmentRequest] = self._decoder.decode(body).requests
            except msgspec.ValidationError as exc:
                obj = _untyped(body)
                if not isinstance(obj, dict) or not isinstance(obj.get("requests"), list):
                    errors = [FieldError("$.requests", "Expected `array` of requests")]
                elif not 1 <= len(obj["requests"]) <= limit:
                    errors = [FieldError("$.requests", f"Expected 1 to {limit} requests, got {len(obj['requests'])}")]
                else:
                    errors = [
                        e for i, item in enumerate(obj["requests"]) for e in request_errors(item, f"$.requests[{i}]")
                    ]
                raise _fail(errors, exc) from None
        return requests
