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

from schemas.outcomes import Outcome, batch_outcome_type
from schemas.request import RiskAssessmentRequest, batch_request_type
from schemas.response import ErrorResponse, FieldError

_REQUEST = msgspec.json.Decoder(RiskAssessmentRequest)
_ANY = msgspec.json.Decoder()


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
    return int(np.max(np.cumsum(_STEP[np.frombuffer(brackets, dtype=np.uint8)])))


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


def struct_errors(
    obj: Any, struct: type[msgspec.Struct], path: str = "$", timestamps: frozenset[str] = frozenset()
) -> list[FieldError]:
    """Every problem of one object against ``struct``, each with its JSON path (``timestamps``: ISO-8601 fields
    whose value must also be a real date)."""
    if not isinstance(obj, dict):
        return [FieldError(path, f"Expected `object`, got `{type(obj).__name__}`")]
    errors: list[FieldError] = []
    for field in msgspec.structs.fields(struct):
        where = f"{path}.{field.encode_name}"
        if field.encode_name not in obj:
            if field.required:
                errors.append(FieldError(where, "Object missing required field"))
            continue
        try:
            msgspec.convert(obj[field.encode_name], field.type)
        except msgspec.ValidationError as exc:
            errors.append(FieldError(where, _message(exc)))
            continue
        if field.name in timestamps:
            try:
                datetime.fromisoformat(obj[field.encode_name])
            except ValueError:
                errors.append(FieldError(where, "Invalid date or time"))
    return errors


_REQUEST_TIMESTAMPS: Final = frozenset({"transaction_timestamp"})


def request_errors(obj: Any, path: str = "$") -> list[FieldError]:
    """Every problem of one request object, each with its JSON path."""
    return struct_errors(obj, RiskAssessmentRequest, path, _REQUEST_TIMESTAMPS)


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
    """Decodes batch bodies ``{"<key>": [...]}`` of 1 … ``limit`` items: requests (``BNPL_BATCH_MAX``) by default,
    outcomes with :meth:`for_outcomes`."""

    def __init__(
        self,
        limit: int,
        max_depth: int = MAX_DEPTH,
        *,
        key: str = "requests",
        item: type[msgspec.Struct] = RiskAssessmentRequest,
        body_type: type[msgspec.Struct] | None = None,
        timestamps: frozenset[str] = _REQUEST_TIMESTAMPS,
    ) -> None:
        self.limit = limit
        self.max_depth = max_depth
        self.key = key
        self.item = item
        self.timestamps = timestamps
        self.body_type = body_type or batch_request_type(limit)
        self._decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(self.body_type)

    @classmethod
    def for_outcomes(cls, limit: int, max_depth: int = MAX_DEPTH) -> BatchDecoder:
        """Decoder of ``POST /v1/bnpl/outcomes`` bodies (``BNPL_OUTCOMES_BATCH_MAX``)."""
        return cls(
            limit,
            max_depth,
            key="outcomes",
            item=Outcome,
            body_type=batch_outcome_type(limit),
            timestamps=frozenset({"outcome_date"}),
        )

    def decode(self, body: bytes) -> list[Any]:
        """The items of a batch body, or :class:`RequestError` (400 malformed JSON, 422 invalid fields)."""
        limit, key = self.limit, self.key
        check_depth(body, self.max_depth)
        with _malformed_bytes():
            try:
                items: list[Any] = getattr(self._decoder.decode(body), key)
            except msgspec.ValidationError as exc:
                obj = _untyped(body)
                if not isinstance(obj, dict) or not isinstance(obj.get(key), list):
                    errors = [FieldError(f"$.{key}", f"Expected `array` of {key}")]
                elif not 1 <= len(obj[key]) <= limit:
                    errors = [FieldError(f"$.{key}", f"Expected 1 to {limit} {key}, got {len(obj[key])}")]
                else:
                    errors = [
                        e
                        for i, item in enumerate(obj[key])
                        for e in struct_errors(item, self.item, f"$.{key}[{i}]", self.timestamps)
                    ]
                raise _fail(errors, exc) from None
        return items
