"""``BNPL_BQ_MODE=stream``: exactly-once appends to ``prediction_logs`` through the BigQuery Storage Write API.

One **committed** write stream per shard of the prediction stream (rows are visible as soon as an append returns),
written with explicit **offsets**. A committed stream accepts an append at offset ``o`` only when ``o`` is its
current end: an append at a lower offset is refused with ``ALREADY_EXISTS`` (those rows are there: success, nothing
written twice), at a higher one with ``OUT_OF_RANGE`` (a gap: an error, nothing written).

The offset is tied to the consumer-group position through the shard's state hash in Redis
(``Keys.bq_write_state``: ``bnpl:predictions:{0}:bqwrite``, the slot of the stream itself) — ``name`` (the write
stream), ``next`` (rows appended and acknowledged so far) and ``intent`` (the append in flight: its offset and the
entry ids of its rows, in order). For the entries of a shard in a batch, the warehouse group:

1. replays a recorded ``intent`` first, if any (a worker died between append and ``XACK``, or before the append):
   the intent's rows are rebuilt from its entries (those of this batch, the others read back from the stream) and
   appended again at the intent's offset — in the same requests (``ROWS_PER_APPEND`` rows each) — so each request
   is either written now or refused with ``ALREADY_EXISTS`` because it was written before; then step 4;
2. records the new intent ``(next, entry ids)`` with a compare-and-set (a script: only when no intent is pending
   and ``next`` is the value read — a second writer of the shard, during a lease hand-over, finds the intent and
   replays it instead of appending other rows at that offset);
3. appends the rows at ``next``, ``next + ROWS_PER_APPEND`` …;
4. in one ``MULTI/EXEC``: ``XACK`` of the intent's entries and of this batch's rows that cannot load, ``next``
   advanced by the rows appended, the intent deleted.

Crash windows: before step 2, nothing was written (the batch is simply redelivered); between 2 and 4, the intent
is pending and the next batch of the shard — the redelivery, or new entries while the dead worker's entries are
not yet claimed — replays it at the same offsets (``ALREADY_EXISTS`` for what landed, written for what did not),
whatever companions the redelivered entries come with; after 4, the entries are acked and never delivered again.
``next`` only moves together with the ``XACK`` of the rows behind it, so Redis and the write stream cannot drift
apart (Redis must not lose acknowledged writes: AOF ``appendfsync always``, as the streams themselves need).

Rows that fail the schema check, or that BigQuery refuses (``row_errors``: the request is refused as a whole, so
the intent is re-recorded without them at the same offset and the rest appended), are reported and dead-lettered
as in ``load`` mode. An intent whose entries left the stream (trimmed) cannot be rebuilt: the write stream is
finalized — its row count says how much of the intent landed, that part is acked — and a new one created. A gap
(``OUT_OF_RANGE``), a write stream gone or finalized, or rows already at a fresh intent's offset (Redis lost
acknowledged writes) raise :class:`warehouse.base.BatchUploadError` (an alert, nothing acked, the batch
retried); transient errors are retried by the runtime (the intent is replayed). Rows are
encoded as protobuf (proto2, descriptor built from the table schema): STRING and JSON as ``string``, FLOAT64 as
``double``, INT64 as ``int64``, BOOL as ``bool``, TIMESTAMP as ``int64`` microseconds since the epoch, REPEATED
columns as ``repeated`` fields, REQUIRED as ``required``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
from google.api_core import exceptions as gexc
from google.cloud.bigquery_storage_v1 import BigQueryWriteClient, types, writer
from google.cloud.bigquery_storage_v1.exceptions import StreamClosedError
from google.cloud.bigquery_storage_v1.services.big_query_write.transports import BigQueryWriteGrpcTransport
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

from schemas.warehouse import Column

log = logging.getLogger(__name__)

#: Rows per AppendRows request (≈ 1.5 KB a row: well under the 10 MB request limit). Part of the protocol: an
#: intent is replayed in the same requests, so changing it needs every intent resolved first.
ROWS_PER_APPEND = 500
#: Seconds to wait for the answer to one append.
APPEND_TIMEOUT_S = 120.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SCALARS = {
    "STRING": descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
    "JSON": descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
    "FLOAT": descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE,
    "INTEGER": descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
    "BOOLEAN": descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
    "TIMESTAMP": descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
}


def row_descriptor(columns: list[Column], name: str = "Row") -> descriptor_pb2.DescriptorProto:
    """The proto2 message of a table's rows (the append's ``writer_schema``); see the module docstring."""
    label = descriptor_pb2.FieldDescriptorProto
    message = descriptor_pb2.DescriptorProto(name=name)
    for number, column in enumerate(columns, start=1):
        repeated = column.kind.endswith("_ARRAY")
        message.field.add(
            name=column.name,
            number=number,
            type=_SCALARS[column.kind.removesuffix("_ARRAY")],
            label=label.LABEL_REPEATED
            if repeated
            else (label.LABEL_OPTIONAL if column.nullable else label.LABEL_REQUIRED),
        )
    return message


def message_class(descriptor: descriptor_pb2.DescriptorProto) -> type[Message]:
    """A Python message class for ``descriptor`` (its own pool: no clash between tables or tests)."""
    pool = descriptor_pool.DescriptorPool()
    file = descriptor_pb2.FileDescriptorProto(name=f"{descriptor.name}.proto", package="bnpl", syntax="proto2")
    file.message_type.add().CopyFrom(descriptor)
    pool.Add(file)
    cls: type[Message] = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"bnpl.{descriptor.name}"))
    return cls


def micros(value: Any) -> int:
    """A TIMESTAMP value (datetime or ISO-8601 text; naive means UTC) as microseconds since the epoch."""
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace(" ", "T"))
    parsed = parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    delta = parsed - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


class RowEncoder:
    """Validated row dicts → serialized protobuf rows of ``columns``."""

    def __init__(self, columns: list[Column]) -> None:
        self.columns = columns
        self.descriptor = row_descriptor(columns)
        self._cls = message_class(self.descriptor)

    def encode(self, row: dict[str, Any]) -> bytes:
        message = self._cls()
        for column in self.columns:
            value = row.get(column.name)
            if value is None:
                continue
            scalar = column.kind.removesuffix("_ARRAY")
            convert: Callable[[Any], Any] = micros if scalar == "TIMESTAMP" else (lambda v: v)
            if column.kind.endswith("_ARRAY"):
                getattr(message, column.name).extend(convert(v) for v in value)
            else:
                setattr(message, column.name, convert(value))
        data: bytes = message.SerializeToString()
        return data


class OffsetGapError(RuntimeError):
    """The write stream refused an offset beyond its end (``OUT_OF_RANGE``): rows before it were never written."""


@dataclass
class AppendResult:
    """What happened to an append of rows at an offset: ``written`` rows landed now, ``existing`` had landed
    before (``ALREADY_EXISTS``), ``refused`` maps row positions to BigQuery's reason (nothing of their request
    landed: ``written`` and ``existing`` count only the requests before it)."""

    written: int = 0
    existing: int = 0
    refused: dict[int, str] = field(default_factory=dict)


def append_requests(rows: list[bytes], offset: int) -> Iterator[types.AppendRowsRequest]:
    """The requests appending ``rows`` at ``offset``: ``ROWS_PER_APPEND`` rows each, each with its own offset.
    Stream and schema are not repeated: the writer's template adds them to the first request of a connection."""
    for start in range(0, len(rows), ROWS_PER_APPEND):
        proto_data = types.AppendRowsRequest.ProtoData(
            rows=types.ProtoRows(serialized_rows=rows[start : start + ROWS_PER_APPEND])
        )
        yield types.AppendRowsRequest(offset=offset + start, proto_rows=proto_data)


def interpret(outcomes: list[tuple[int, Any]], result: AppendResult) -> AppendResult:
    """Fold the outcome of each request — ``(rows in it, AppendRowsResponse or exception)``, in order — into
    ``result``. Stops at the first refused request (the later ones answer ``OUT_OF_RANGE`` behind it)."""
    position = 0
    for count, outcome in outcomes:
        if isinstance(outcome, gexc.AlreadyExists):
            result.existing += count
        elif isinstance(outcome, gexc.OutOfRange):
            raise OffsetGapError(f"offset beyond the write stream's end: {outcome.message}") from outcome
        elif isinstance(outcome, BaseException):
            errors = getattr(getattr(outcome, "response", None), "row_errors", None)
            if errors:
                for error in errors:
                    result.refused[position + int(error.index)] = f"BigQuery refused the row: {error.message}"
                return result
            raise outcome
        else:
            result.written += count
        position += count
    return result


class CommittedWriter:
    """Committed write streams of one table and offset appends to them (the real ``BigQueryWriteClient``)."""

    def __init__(self, client: BigQueryWriteClient, table_path: str, columns: list[Column]) -> None:
        self.client = client
        self.table_path = table_path  # projects/<p>/datasets/<d>/tables/<t>
        self.encoder = RowEncoder(columns)

    def create_stream(self) -> str:
        stream = types.WriteStream(type_=types.WriteStream.Type.COMMITTED)
        created = self.client.create_write_stream(parent=self.table_path, write_stream=stream)
        name: str = created.name
        return name

    def append(self, stream: str, rows: list[bytes], offset: int) -> AppendResult:
        """Append ``rows`` at ``offset`` (see :func:`interpret`); raises :class:`OffsetGapError` on a gap."""
        result = AppendResult()
        if not rows:
            return result
        template = types.AppendRowsRequest(
            write_stream=stream,
            proto_rows=types.AppendRowsRequest.ProtoData(
                writer_schema=types.ProtoSchema(proto_descriptor=self.encoder.descriptor)
            ),
        )
        manager = writer.AppendRowsStream(self.client, template)
        outcomes: list[tuple[int, Any]] = []
        try:
            futures = []
            for request in append_requests(rows, offset):
                futures.append((len(request.proto_rows.rows.serialized_rows), manager.send(request)))
            for count, future in futures:
                try:
                    outcomes.append((count, future.result(timeout=APPEND_TIMEOUT_S)))
                except gexc.GoogleAPICallError as exc:
                    outcomes.append((count, exc))
        finally:
            with contextlib.suppress(StreamClosedError):
                manager.close()
        return interpret(outcomes, result)

    def finalize(self, stream: str) -> int:
        """Finalize ``stream`` (no more appends); its row count."""
        response = self.client.finalize_write_stream(name=stream)
        return int(response.row_count)


def write_client(endpoint: str | None = None) -> BigQueryWriteClient:
    """The Storage Write client; ``endpoint`` (``host:port``) points it at a plaintext test double."""
    if endpoint:
        return BigQueryWriteClient(transport=BigQueryWriteGrpcTransport(channel=grpc.insecure_channel(endpoint)))
    return BigQueryWriteClient()
