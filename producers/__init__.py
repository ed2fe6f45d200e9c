"""What the API writes to Redis Streams: the event publisher (in-memory queue, blocks, spool and replay)."""
