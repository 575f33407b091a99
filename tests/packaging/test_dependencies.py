"""Multi-file bundles and dependency layers through the real API, real pip/npm and real sandboxes."""

from __future__ import annotations

import base64
import io
import zipfile
from pathlib import Path
from typing import Any

import httpx

from hearth.testing import HearthServer, b64_zip, zipped

SIX_APP = {
    "app.py": (
        "import six\nfrom helpers.text import shout\n\n"
        "def handler(event, context):\n    return {'six': six.__version__, 'shout': shout(event.get('say', 'hi'))}\n"
    ),
    "helpers/__init__.py": "",
    "helpers/text.py": "def shout(text):\n    return text.upper() + '!'\n",
    "requirements.txt": "six==1.16.0\n",
}
JS_APP = {
    "index.js": (
        "const isNumber = require('is-number');\nconst { twice } = require('./lib/math');\n"
        "exports.handler = async (event) => ({ isNumber: isNumber(event.x), twice: twice(event.x) });\n"
    ),
    "lib/math.js": "exports.twice = (x) => x * 2;\n",
    "package.json": '{"name": "js-deps", "dependencies": {"is-number": "7.0.0"}}\n',
}


def create(hearth: HearthServer, name: str, files: dict[str, str], **settings: Any) -> httpx.Response:
    body = {"name": name, "language": "python", "handler": "app.handler", "zip_base64": b64_zip(files), **settings}
    return hearth.client.post("/api/functions", json=body)


def layers_root(hearth: HearthServer) -> Path:
    return hearth.data_dir / "code" / "layers"


def test_python_bundle_with_requirements_runs_with_its_packages(hearth: HearthServer, fname: str) -> None:
    created = create(hearth, fname, SIX_APP)
    assert created.status_code == 201, created.text
    fn = created.json()
    assert fn["layer"] and fn["build_id"]
    result = hearth.invoke(fname, {"say": "hey"})
    assert result.status_code == 200, result.text
    assert result.json() == {"six": "1.16.0", "shout": "HEY!"}

    build = hearth.client.get(f"/api/functions/{fname}/builds/{fn['build_id']}").json()
    assert build["status"] == "succeeded" and build["version"] == 1 and build["manifest"] == "requirements.txt"
    assert "six" in build["log"] and build["layer_sha256"] == fn["layer"]
    assert (layers_root(hearth) / fn["layer"] / "python" / "six.py").is_file()
    got = hearth.client.get(f"/api/functions/{fname}").json()
    assert got["files"] == sorted(SIX_APP)
    # log_offset gives the rest of the log, for following it
    tail = hearth.client.get(f"/api/functions/{fname}/builds/{fn['build_id']}", params={"log_offset": 10}).json()
    assert tail["log"] == build["log"][10:] and tail["log_size"] == build["log_size"]


def test_identical_dependency_lists_build_once(hearth: HearthServer, fname: str) -> None:
    first = create(hearth, fname, SIX_APP)
    assert first.status_code == 201, first.text
    before = sorted(p.name for p in layers_root(hearth).iterdir())
    # Same list written differently (comment, blank line): same layer, nothing installed.
    again = {**SIX_APP, "requirements.txt": "# the only dependency\nsix==1.16.0\n\n"}
    second = create(hearth, fname + "-b", again)
    assert second.status_code == 201, second.text
    assert second.json()["layer"] == first.json()["layer"]
    build = hearth.client.get(f"/api/functions/{fname}-b/builds/{second.json()['build_id']}").json()
    assert build["cached"] is True and "already built" in build["log"]
    assert sorted(p.name for p in layers_root(hearth).iterdir()) == before
    assert hearth.invoke(fname + "-b", {}).json()["six"] == "1.16.0"


def test_javascript_bundle_with_package_json(hearth: HearthServer, fname: str) -> None:
    body = {"name": fname, "language": "javascript", "handler": "index.handler", "zip_base64": b64_zip(JS_APP)}
    created = hearth.client.post("/api/functions", json=body)
    assert created.status_code == 201, created.text
    assert (layers_root(hearth) / created.json()["layer"] / "node_modules" / "is-number" / "package.json").is_file()
    result = hearth.invoke(fname, {"x": 21})
    assert result.status_code == 200, result.text
    assert result.json() == {"isNumber": True, "twice": 42}


def test_a_failed_build_is_a_clear_error_and_the_previous_version_keeps_serving(
    hearth: HearthServer, fname: str
) -> None:
    first = create(hearth, fname, {"app.py": "def handler(event, context):\n    return 'v1'\n"})
    assert first.status_code == 201, first.text
    broken = {
        "app.py": "def handler(event, context):\n    return 'v2'\n",
        "requirements.txt": "hearth-no-such-pkg==0.0.1\n",
    }
    response = hearth.client.put(
        f"/api/functions/{fname}", json={"language": "python", "handler": "app.handler", "zip_base64": b64_zip(broken)}
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "BuildFailed" and "hearth-no-such-pkg" in error["message"]
    build = hearth.client.get(f"/api/functions/{fname}/builds/{error['build_id']}").json()
    assert build["status"] == "failed" and build["version"] is None and "hearth-no-such-pkg" in build["log"]
    assert hearth.invoke(fname).json() == "v1"
    versions = hearth.client.get(f"/api/functions/{fname}/versions").json()
    assert [v["version"] for v in versions] == [1]
    listed = hearth.client.get(f"/api/functions/{fname}/builds").json()["builds"]
    assert [b["status"] for b in listed] == ["failed"] and listed[0]["log"] is None


def test_bad_bundles_are_refused_with_the_field_named(hearth: HearthServer, fname: str) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"zip_base64": "not base64!!"}, "zip_base64"),
        ({"zip_base64": base64.b64encode(b"plain text").decode()}, "zip_base64"),
        ({"zip_base64": b64_zip({"../escape.py": "x", "app.py": ""})}, "zip_base64"),
        ({"zip_base64": b64_zip({"other.py": ""})}, "handler"),  # app.handler needs app.py
        ({"zip_base64": b64_zip({"app.py": "", "requirements.txt": "-e /etc\n"})}, "zip_base64"),
    ]
    for settings, field in cases:
        body = {"name": fname, "language": "python", "handler": "app.handler", **settings}
        response = hearth.client.post("/api/functions", json=body)
        assert response.status_code == 422, (settings, response.text)
        fields = [f["field"] for f in response.json()["error"]["fields"]]
        assert field in fields, (settings, response.text)
    both = {"name": fname, "language": "python", "code": "x", "zip_base64": b64_zip({"main.py": ""})}
    assert hearth.client.post("/api/functions", json=both).status_code == 422
    neither = {"name": fname, "language": "python"}
    assert hearth.client.post("/api/functions", json=neither).status_code == 422
    assert hearth.client.get(f"/api/functions/{fname}").status_code == 404


def test_multipart_and_raw_zip_uploads_and_download(hearth: HearthServer, fname: str) -> None:
    v1 = {"app.py": "def handler(event, context):\n    return 'multipart'\n"}
    created = hearth.client.put(
        f"/api/functions/{fname}/code",
        files={"zip": ("fn.zip", zipped(v1), "application/zip")},
        data={"settings": '{"language": "python", "handler": "app.handler", "memory_mb": 64}'},
    )
    assert created.status_code == 201, created.text
    assert created.json()["memory_mb"] == 64
    assert hearth.invoke(fname).json() == "multipart"

    v2 = {"app.py": "def handler(event, context):\n    return 'raw'\n", "extra/data.txt": "payload"}
    updated = hearth.client.put(
        f"/api/functions/{fname}/code", content=zipped(v2), headers={"content-type": "application/zip"}
    )
    assert updated.status_code == 200, updated.text
    assert (updated.json()["version"], updated.json()["memory_mb"]) == (2, 64)  # other settings kept
    assert hearth.invoke(fname).json() == "raw"

    download = hearth.client.get(f"/api/functions/{fname}/code")
    assert download.status_code == 200 and download.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(download.content)) as archive:
        assert {n: archive.read(n).decode() for n in archive.namelist()} == v2

    missing = hearth.client.put("/api/functions/no-such-fn-x/code", content=zipped(v2))
    assert missing.status_code == 415
    missing = hearth.client.put(
        "/api/functions/no-such-fn-x/code", content=zipped(v2), headers={"content-type": "application/zip"}
    )
    assert missing.status_code == 404


def test_patch_keeps_the_dependency_layer(hearth: HearthServer, fname: str) -> None:
    created = create(hearth, fname, SIX_APP)
    assert created.status_code == 201, created.text
    patched = hearth.client.patch(f"/api/functions/{fname}", json={"memory_mb": 96})
    assert patched.status_code == 200, patched.text
    assert patched.json()["layer"] == created.json()["layer"]
    assert hearth.invoke(fname, {"say": "x"}).json()["six"] == "1.16.0"


def test_a_layer_serves_after_a_restart(fresh_hearth: HearthServer, fname: str) -> None:
    created = create(fresh_hearth, fname, SIX_APP)
    assert created.status_code == 201, created.text
    fresh_hearth.restart()
    result = fresh_hearth.invoke(fname, {"say": "again"})
    assert result.status_code == 200, result.text
    assert result.json() == {"six": "1.16.0", "shout": "AGAIN!"}
