"""An in-process gRPC fake of BigQuery's Storage Write API (``BigQueryWrite``) for committed streams.

Served with ``grpc.server`` and generic method handlers, (de)serialized with the client library's own message
types: CreateWriteStream, AppendRows (bidirectional; offsets checked as the service does: below the end →
``ALREADY_EXISTS``, beyond it → ``OUT_OF_RANGE``, a finalized stream → ``INVALID_ARGUMENT``; rows decoded with the
request's proto2 descriptor, a row missing a field of ``required`` refuses the whole request with ``row_errors``),
GetWriteStream, FinalizeWriteStream (its row count).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
from google.cloud.bigquery_storage_v1 import types
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.rpc import code_pb2, status_pb2

SERVICE = "google.cloud.bigquery.storage.v1.BigQueryWrite"


class FakeBigQueryWrite:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.streams: dict[str, list[dict[str, Any]]] = {}  # stream name → rows (decoded), in offset order
        self.finalized: set[str] = set()
        self.required: set[str] = set()  # columns a row must have (simulates a schema BigQuery enforces)
        self.answers: list[tuple[str, int, str]] = []  # (stream, offset, status name) per append request
        self._server: grpc.Server | None = None
        self.endpoint = ""

    # --- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> FakeBigQueryWrite:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        handlers = {
            "CreateWriteStream": grpc.unary_unary_rpc_method_handler(
                self._create,
                request_deserializer=types.CreateWriteStreamRequest.deserialize,
                response_serializer=types.WriteStream.serialize,
            ),
            "GetWriteStream": grpc.unary_unary_rpc_method_handler(
                self._get,
                request_deserializer=types.GetWriteStreamRequest.deserialize,
                response_serializer=types.WriteStream.serialize,
            ),
            "FinalizeWriteStream": grpc.unary_unary_rpc_method_handler(
                self._finalize,
                request_deserializer=types.FinalizeWriteStreamRequest.deserialize,
                response_serializer=types.FinalizeWriteStreamResponse.serialize,
            ),
            "AppendRows": grpc.stream_stream_rpc_method_handler(
                self._append_rows,
                request_deserializer=types.AppendRowsRequest.deserialize,
                response_serializer=types.AppendRowsResponse.serialize,
            ),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        self.endpoint = f"127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None)

    def rows(self) -> list[dict[str, Any]]:
        with self.lock:
            return [row for rows in self.streams.values() for row in rows]

    # --- methods -----------------------------------------------------------------------------------------------
    def _create(self, request: types.CreateWriteStreamRequest, context: grpc.ServicerContext) -> types.WriteStream:
        if request.write_stream.type_ != types.WriteStream.Type.COMMITTED:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the fake serves committed streams only")
        with self.lock:
            name = f"{request.parent}/streams/s{len(self.streams)}"
            self.streams[name] = []
        return types.WriteStream(name=name, type_=types.WriteStream.Type.COMMITTED)

    def _get(self, request: types.GetWriteStreamRequest, context: grpc.ServicerContext) -> types.WriteStream:
        with self.lock:
            if request.name not in self.streams:
                context.abort(grpc.StatusCode.NOT_FOUND, f"no stream {request.name}")
        return types.WriteStream(name=request.name, type_=types.WriteStream.Type.COMMITTED)

    def _finalize(
        self, request: types.FinalizeWriteStreamRequest, context: grpc.ServicerContext
    ) -> types.FinalizeWriteStreamResponse:
        with self.lock:
            if request.name not in self.streams:
                context.abort(grpc.StatusCode.NOT_FOUND, f"no stream {request.name}")
            self.finalized.add(request.name)
            return types.FinalizeWriteStreamResponse(row_count=len(self.streams[request.name]))

    def _append_rows(
        self, requests: Iterator[types.AppendRowsRequest], context: grpc.ServicerContext
    ) -> Iterator[types.AppendRowsResponse]:
        stream = ""
        decoder: Any = None
        for request in requests:
            stream = request.write_stream or stream
            if request.proto_rows.writer_schema.proto_descriptor.name:
                decoder = _message_class(request.proto_rows.writer_schema.proto_descriptor)
            if not stream or decoder is None:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first request names the stream and schema")
            yield self._append(stream, decoder, request)

    def _append(self, stream: str, decoder: Any, request: types.AppendRowsRequest) -> types.AppendRowsResponse:
        serialized = list(request.proto_rows.rows.serialized_rows)
        decoded: list[dict[str, Any]] = []
        row_errors = []
        for index, data in enumerate(serialized):
            message = decoder()
            message.MergeFromString(data)
            row = {f.name: v for f, v in message.ListFields()}
            missing = sorted(self.required - set(row))
            if not message.IsInitialized() or missing:
                row_errors.append(
                    types.RowError(
                        index=index,
                        code=types.RowError.RowErrorCode.FIELDS_ERROR,
                        message=f"Missing required field: {', '.join(missing) or 'proto required'}",
                    )
                )
            decoded.append(row)
        with self.lock:
            rows = self.streams.get(stream)
            offset = request.offset if "offset" in request else None
            if rows is None:
                return self._error(stream, offset, code_pb2.NOT_FOUND, f"no stream {stream}")
            if stream in self.finalized:
                return self._error(stream, offset, code_pb2.INVALID_ARGUMENT, f"stream {stream} is finalized")
            end = len(rows)
            if offset is not None and offset < end:
                return self._error(stream, offset, code_pb2.ALREADY_EXISTS, f"offset {offset} < end {end}")
            if offset is not None and offset > end:
                return self._error(stream, offset, code_pb2.OUT_OF_RANGE, f"offset {offset} > end {end}")
            if row_errors:
                response = self._error(stream, offset, code_pb2.INVALID_ARGUMENT, "rows refused")
                response.row_errors.extend(row_errors)
                return response
            rows.extend(decoded)
            self.answers.append((stream, end, "OK"))
        return types.AppendRowsResponse(append_result=types.AppendRowsResponse.AppendResult(offset=end))

    def _error(self, stream: str, offset: int | None, code: int, message: str) -> types.AppendRowsResponse:
        self.answers.append((stream, -1 if offset is None else offset, code_pb2.Code.Name(code)))
        return types.AppendRowsResponse(error=status_pb2.Status(code=code, message=message))


def _message_class(descriptor: descriptor_pb2.DescriptorProto) -> Any:
    pool = descriptor_pool.DescriptorPool()
    file = descriptor_pb2.FileDescriptorProto(name="fake_row.proto", package="fake", syntax="proto2")
    file.message_type.add().CopyFrom(descriptor)
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"fake.{descriptor.name}"))
