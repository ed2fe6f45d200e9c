"""Load tools: generated traffic for the demo, benchmarks and tests (never imported by the serving path).

``traffic.http`` replays generated requests against the API over HTTP; ``traffic.events`` puts real prediction
events straight onto a stream, laid out exactly as the API's publisher writes them; ``traffic.landing`` decides
generated traffic straight into a warehouse, with the funded loans' outcomes.
"""
