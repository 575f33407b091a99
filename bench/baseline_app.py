"""The baseline: a bare FastAPI hello endpoint under the same uvicorn settings Hearth uses."""

import json

from fastapi import FastAPI, Request
from fastapi.responses import Response

app = FastAPI()
# What bench.run's large-result function returns, encoded once at start as the agent would.
ITEMS = [{"id": i, "name": f"item {i}", "tags": ["a", "b"], "price": i * 1.5} for i in range(200)]
LARGE = json.dumps({"items": ITEMS}, separators=(",", ":")).encode()


@app.post("/hello")
async def hello(request: Request) -> Response:
    await request.body()
    return Response(b'"hello"', media_type="application/json")


@app.post("/large")
async def large(request: Request) -> Response:
    await request.body()
    return Response(LARGE, media_type="application/json")
