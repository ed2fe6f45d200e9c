"""The baseline for the API benchmark: a trivial aiohttp handler (orjson parse, one numpy dot product, orjson reply)."""

from __future__ import annotations

import argparse

import numpy as np
import orjson
from aiohttp import web

NUMERIC = (
    "amount",
    "customer_tenure_days",
    "risk_score",
    "installment_count",
    "payment_credit_limit",
    "price_comparison_time",
)
WEIGHTS = np.array([0.001, -0.0005, 2.0, 0.1, -0.0002, -0.001])


async def score(request: web.Request) -> web.Response:
    body = orjson.loads(await request.read())
    x = np.array([float(body[name]) for name in NUMERIC])
    return web.Response(body=orjson.dumps({"score": float(WEIGHTS @ x)}), content_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_post("/v1/bnpl/risk-assessment", score)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
