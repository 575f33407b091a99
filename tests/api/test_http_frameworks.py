"""Real web frameworks behind their real Lambda adapters, deployed unchanged and called through /fn.

FastAPI under Mangum (PyPI) and Express under serverless-http (npm), installed as the functions'
own dependencies (requirements.txt / package.json), in both HTTP payload formats: every method,
paths below the route, repeated query keys and headers, request cookies and Set-Cookie responses,
JSON, form and binary bodies. Mangum goes in through boto3's create_function, Express through
`hearth deploy` (hearth.toml) and the API.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from hearth.testing import HearthServer, zipped

boto3 = pytest.importorskip("boto3")
from botocore.config import Config  # noqa: E402

FASTAPI_APP = """\
from fastapi import Cookie, FastAPI, Form, Header, Query, Request, Response
from mangum import Mangum

app = FastAPI()


@app.api_route("/items/{item_id}", methods=["GET", "HEAD"])
def read_item(
    item_id: int,
    request: Request,
    response: Response,
    tag: list[str] = Query(default=[]),
    x_token: str | None = Header(default=None),
    session: str | None = Cookie(default=None),
):
    response.set_cookie("seen", str(item_id))
    response.set_cookie("flavour", "oat")
    return {
        "item_id": item_id,
        "tags": tag,
        "x_token": x_token,
        "multi": request.headers.get("x-multi"),
        "session": session,
        "cookies": dict(request.cookies),
        "method": request.method,
        "path": request.url.path,
    }


@app.post("/items", status_code=201)
async def create_item(item: dict):
    return {"created": item}


@app.put("/items/{item_id}")
async def replace_item(item_id: int, item: dict):
    return {"replaced": item_id, "item": item}


@app.patch("/items/{item_id}")
async def patch_item(item_id: int, item: dict):
    return {"patched": item_id, "item": item}


@app.delete("/items/{item_id}", status_code=204)
async def delete_item(item_id: int):
    return Response(status_code=204)


@app.options("/items")
async def options_items():
    return Response(headers={"allow": "GET, POST, OPTIONS"})


@app.post("/form")
async def form(name: str = Form(), colour: list[str] = Form(default=[])):
    return {"name": name, "colour": colour}


@app.post("/bytes")
async def reverse_bytes(request: Request):
    return Response(content=(await request.body())[::-1], media_type="application/octet-stream")


handler = Mangum(app, lifespan="off")
"""
FASTAPI_REQUIREMENTS = "fastapi==0.115.6\nmangum==0.19.0\npython-multipart==0.0.20\n"

EXPRESS_APP = """\
const express = require("express");
const serverless = require("serverless-http");

const app = express();
app.use(express.json());
app.use(express.urlencoded({ extended: false }));
app.use(express.raw({ type: "application/octet-stream" }));

function cookies(req) {
  const out = {};
  for (const part of (req.get("cookie") || "").split(";")) {
    const [name, ...rest] = part.trim().split("=");
    if (name) out[name] = rest.join("=");
  }
  return out;
}

app.get("/items/:id", (req, res) => {
  res.cookie("seen", req.params.id);
  res.cookie("flavour", "oat");
  const tag = req.query.tag;
  res.json({
    item_id: Number(req.params.id),
    tags: tag === undefined ? [] : [].concat(tag),
    x_token: req.get("x-token") || null,
    multi: req.get("x-multi") || null,
    session: cookies(req).session || null,
    cookies: cookies(req),
    method: req.method,
    path: req.path,
  });
});
app.post("/items", (req, res) => res.status(201).json({ created: req.body }));
app.put("/items/:id", (req, res) => res.json({ replaced: Number(req.params.id), item: req.body }));
app.patch("/items/:id", (req, res) => res.json({ patched: Number(req.params.id), item: req.body }));
app.delete("/items/:id", (req, res) => res.status(204).end());
app.options("/items", (req, res) => res.set("allow", "GET, POST, OPTIONS").status(200).end());
app.post("/form", (req, res) => res.json({ name: req.body.name, colour: [].concat(req.body.colour || []) }));
app.post("/bytes", (req, res) => res.type("application/octet-stream").send(Buffer.from(req.body).reverse()));

module.exports.handler = serverless(app, { binary: ["application/octet-stream"] });
"""
EXPRESS_PACKAGE = json.dumps(
    {"name": "express-on-hearth", "private": True, "dependencies": {"express": "5.1.0", "serverless-http": "4.0.0"}}
)


def check_app(base: str, repeated_header: list[str] | None = None) -> None:
    """The same conversation with either app, at `base` (the function's trigger URL). `repeated_header`:
    what the app sees of a header sent twice (both values, unless its adapter reads 1.0's `headers`,
    which holds the last one)."""
    with httpx.Client(timeout=120) as client:
        got = client.get(
            f"{base}/items/5",
            params=[("tag", "a"), ("tag", "b")],
            headers=[("X-Token", "t0k"), ("X-Multi", "one"), ("X-Multi", "two"), ("Cookie", "session=s1; other=o2")],
        )
        assert got.status_code == 200, got.text
        body = got.json()
        assert (body["item_id"], body["tags"], body["x_token"]) == (5, ["a", "b"], "t0k"), body
        assert [part.strip() for part in body["multi"].split(",")] == (repeated_header or ["one", "two"]), body
        assert body["session"] == "s1" and body["cookies"] == {"session": "s1", "other": "o2"}, body
        assert (body["method"], body["path"]) == ("GET", "/items/5"), body
        set_cookies = got.headers.get_list("set-cookie")
        assert len(set_cookies) == 2, set_cookies
        assert set_cookies[0].startswith("seen=5") and set_cookies[1].startswith("flavour=oat"), set_cookies
        assert got.headers["content-type"].startswith("application/json")

        head = client.head(f"{base}/items/5")
        assert head.status_code == 200 and head.content == b"", head

        made = client.post(f"{base}/items", json={"name": "kettle", "n": 1})
        assert (made.status_code, made.json()) == (201, {"created": {"name": "kettle", "n": 1}}), made.text
        replaced = client.put(f"{base}/items/7", json={"name": "pot"})
        assert replaced.json() == {"replaced": 7, "item": {"name": "pot"}}, replaced.text
        patched = client.patch(f"{base}/items/7", json={"n": 2})
        assert patched.json() == {"patched": 7, "item": {"n": 2}}, patched.text
        deleted = client.delete(f"{base}/items/7")
        assert (deleted.status_code, deleted.content) == (204, b""), deleted.text
        options = client.options(f"{base}/items")
        assert options.status_code == 200 and options.headers["allow"] == "GET, POST, OPTIONS", options

        form = client.post(f"{base}/form", data={"name": "ada", "colour": ["red", "blue"]})
        assert form.json() == {"name": "ada", "colour": ["red", "blue"]}, form.text
        blob = bytes(range(256)) * 4
        reversed_blob = client.post(f"{base}/bytes", content=blob, headers={"content-type": "application/octet-stream"})
        assert reversed_blob.status_code == 200, reversed_blob.text
        assert reversed_blob.content == blob[::-1]
        assert reversed_blob.headers["content-type"] == "application/octet-stream"

        missing = client.get(f"{base}/nowhere")
        assert missing.status_code == 404, missing.text


def lambda_client(server: HearthServer) -> Any:
    return boto3.client(
        "lambda",
        endpoint_url=server.base_url,
        region_name="us-east-1",
        aws_access_key_id="hearth",
        aws_secret_access_key=server.api_key,
        config=Config(read_timeout=600, retries={"max_attempts": 1}),
    )


def test_fastapi_under_mangum_in_both_payload_formats(hearth: HearthServer, fname: str) -> None:
    aws = lambda_client(hearth)
    aws.create_function(
        FunctionName=fname,
        Runtime="python3.11",
        Role="arn:aws:iam::000000000000:role/x",
        Handler="app.handler",
        Code={"ZipFile": zipped({"app.py": FASTAPI_APP, "requirements.txt": FASTAPI_REQUIREMENTS})},
        Timeout=30,
    )
    assert hearth.client.get(f"/api/functions/{fname}").json()["http_payload_format"] == "2.0"
    check_app(f"{hearth.base_url}/fn/{fname}")

    patched = hearth.client.patch(f"/api/functions/{fname}", json={"http_payload_format": "1.0"})
    assert patched.status_code == 200 and patched.json()["http_payload_format"] == "1.0", patched.text
    check_app(f"{hearth.base_url}/fn/{fname}")


def test_express_under_serverless_http_in_both_payload_formats(
    hearth: HearthServer, fname: str, tmp_path: Path
) -> None:
    # Format 1.0 through `hearth deploy` and hearth.toml ...
    project = tmp_path / fname
    project.mkdir()
    (project / "index.js").write_text(EXPRESS_APP)
    (project / "package.json").write_text(EXPRESS_PACKAGE)
    (project / "hearth.toml").write_text(
        f'name = "{fname}"\nlanguage = "javascript"\nhandler = "index.handler"\nroute = "/{fname}/shop"\n'
        'http_payload_format = "1.0"\n'
    )
    env = {**os.environ, "HEARTH_API_URL": hearth.base_url, "HEARTH_API_KEY": hearth.api_key}
    deployed = subprocess.run(
        [sys.executable, "-m", "hearth.cli", "deploy", str(project), "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert deployed.returncode == 0, deployed.stderr
    function = hearth.client.get(f"/api/functions/{fname}").json()
    assert (function["http_payload_format"], function["route"]) == ("1.0", f"/{fname}/shop")
    check_app(f"{hearth.base_url}/fn/{fname}/shop", repeated_header=["two"])  # serverless-http reads `headers`

    # ... and the default, 2.0, through the API with the same files.
    bundle = base64.b64encode(zipped({"index.js": EXPRESS_APP, "package.json": EXPRESS_PACKAGE})).decode()
    made = hearth.client.post(
        "/api/functions",
        json={"name": f"{fname}-v2", "language": "javascript", "handler": "index.handler", "zip_base64": bundle},
        timeout=600,
    )
    assert made.status_code == 201, made.text
    assert made.json()["http_payload_format"] == "2.0"
    check_app(f"{hearth.base_url}/fn/{fname}-v2")
