"""The baseline: a bare FastAPI hello endpoint under the same uvicorn settings Hearth uses."""

from fastapi import FastAPI, Request
from fastapi.responses import Response

app = FastAPI()


@app.post("/hello")
async def hello(request: Request) -> Response:
    await request.body()
    return Response(b'"hello"', media_type="application/json")
