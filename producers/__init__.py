"""Everything that writes to Redis Streams: the API's event publisher, the traffic simulator, outcomes."""
