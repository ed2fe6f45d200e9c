"""How prediction events travel in Redis: the version 2 JSON document, zstd-compressed with a trained dictionary.

Events are small documents of one shape, so most of their bytes are field names and repeated values. With the
dictionary (``event-dictionary-1.zstd``, trained by ``training.event_codec``) an event shrinks from ≈1.65 KB of
JSON to ≈0.2 KB, and its Redis stream entry from ≈2 KB to ≈0.3 KB (``make bench-memory``); compressing costs the
API ≈3.5 µs per event in its background flusher, decompressing a consumer ≈2 µs. JSON stays the document format:
the spool, the warehouse and every decoder see plain JSON; only the stream carries it compressed.

A stream entry names its codec (``common.keys``: the ``c`` field); an entry without one is plain JSON (alerts, and
events from before this codec). A new dictionary is a new codec id; old ids stay decodable.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Final

import zstandard

#: The codec the API writes.
EVENT_CODEC: Final = "zd1"
_DICTIONARIES: Final = {"zd1": Path(__file__).with_name("event-dictionary-1.zstd")}
#: Largest document a frame may claim to hold (events are a few KB; a bigger claim is a corrupt entry).
MAX_DOCUMENT_BYTES: Final = 1 << 20
_LEVEL: Final = 3
_local = threading.local()  # zstd contexts are not thread-safe: one per thread (event loop, warehouse worker)


def _dictionary(codec: str) -> zstandard.ZstdCompressionDict:
    cache: dict[str, zstandard.ZstdCompressionDict] = _local.__dict__.setdefault("dicts", {})
    found = cache.get(codec)
    if found is None:
        if codec not in _DICTIONARIES:
            raise ValueError(f"unknown event codec {codec!r}")
        found = cache[codec] = zstandard.ZstdCompressionDict(_DICTIONARIES[codec].read_bytes())
    return found


def _compressor() -> zstandard.ZstdCompressor:
    compressor: zstandard.ZstdCompressor | None = _local.__dict__.get("compressor")
    if compressor is None:
        compressor = _local.compressor = zstandard.ZstdCompressor(
            level=_LEVEL, dict_data=_dictionary(EVENT_CODEC), write_checksum=False
        )
    return compressor


def compress(document: bytes) -> bytes:
    """``document`` (event JSON) encoded with :data:`EVENT_CODEC`."""
    compressed: bytes = _compressor().compress(document)
    return compressed


def compress_many(documents: list[bytes]) -> list[bytes]:
    """Each of ``documents`` encoded with :data:`EVENT_CODEC`, in one call into zstd, which releases the GIL
    (the publisher runs it in a worker thread, off the event loop).

    >>> [decompress("zd1", p) for p in compress_many([b"{}", b"[1]"])]
    [b'{}', b'[1]']
    """
    if not documents:
        return []
    inputs: list[bytes | bytearray | memoryview] = list(documents)
    result = _compressor().multi_compress_to_buffer(inputs, threads=0)
    return [result[i].tobytes() for i in range(len(result))]


def decompress(codec: str, payload: bytes) -> bytes:
    """The JSON document of an entry payload written with ``codec`` (``""``: plain JSON, returned as it is).

    >>> decompress("zd1", compress(b'{"a": 1}'))
    b'{"a": 1}'
    """
    if not codec:
        return payload
    decompressors: dict[str, zstandard.ZstdDecompressor] = _local.__dict__.setdefault("decompressors", {})
    decompressor = decompressors.get(codec)
    if decompressor is None:
        decompressor = decompressors[codec] = zstandard.ZstdDecompressor(dict_data=_dictionary(codec))
    try:
        size = zstandard.frame_content_size(payload)
        if size < 0 or size > MAX_DOCUMENT_BYTES:
            raise ValueError(f"{codec} frame claims {size} bytes")
        document: bytes = decompressor.decompress(payload)
    except zstandard.ZstdError as exc:
        raise ValueError(f"corrupt {codec} payload: {exc}") from None
    return document
