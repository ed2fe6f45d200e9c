"""The front door: aiohttp app factory, routes, validation errors, auth, health/readiness, metrics."""
