"""Bundles whose paths cannot be written are refused at upload with the entry named (422 through the
API, InvalidParameterValueException through the Lambda API), never a 500; nothing is deployed."""

from __future__ import annotations

import base64
import io
import stat
import zipfile
from typing import Any

import pytest

from hearth.testing import HearthServer

boto3 = pytest.importorskip("boto3")
from botocore.exceptions import ClientError  # noqa: E402

HANDLER = "def handler(event, context):\n    return 'ok'\n"
LONG = "n" * 256  # one byte over NAME_MAX


def zip_with(entries: list[tuple[str, bytes]], *, symlink: tuple[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in entries:
            archive.writestr(name, content)
        if symlink is not None:
            info = zipfile.ZipInfo(symlink[0])
            info.create_system = 3  # Unix: external_attr carries the mode
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, symlink[1])
    return buffer.getvalue()


BAD_BUNDLES: dict[str, tuple[bytes, str]] = {
    # case: (the zip, what the message must name)
    "long-name": (zip_with([("app.py", HANDLER.encode()), (f"data/{LONG}.txt", b"x")]), LONG[:40]),
    "long-dir": (zip_with([("app.py", HANDLER.encode()), (f"{LONG}/x.txt", b"x")]), LONG[:40]),
    "file-and-dir": (zip_with([("app.py", HANDLER.encode()), ("a", b"file"), ("a/b", b"under it")]), "'a'"),
    "dir-then-file": (zip_with([("app.py", HANDLER.encode()), ("lib/x/y.py", b""), ("lib/x", b"")]), "'lib/x'"),
    "symlink": (zip_with([("app.py", HANDLER.encode())], symlink=("link", "/etc/passwd")), "'link'"),
    "symlink-dir": (zip_with([("app.py", HANDLER.encode())], symlink=("etc/", "/etc")), "'etc/'"),
}


@pytest.mark.parametrize("case", sorted(BAD_BUNDLES))
def test_unwritable_paths_are_a_422_naming_the_entry(hearth: HearthServer, fname: str, case: str) -> None:
    data, named = BAD_BUNDLES[case]
    body = {
        "name": fname,
        "language": "python",
        "handler": "app.handler",
        "zip_base64": base64.b64encode(data).decode(),
    }
    response = hearth.client.post("/api/functions", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "ValidationError" and named in error["message"], error
    assert [f["field"] for f in error["fields"]] == ["zip_base64"]
    assert hearth.client.get(f"/api/functions/{fname}").status_code == 404
    # the same through an update of a function that exists: refused, the function unchanged
    hearth.deploy(fname, HANDLER)
    patched = hearth.client.patch(f"/api/functions/{fname}", json={"zip_base64": body["zip_base64"]})
    assert patched.status_code == 422, patched.text
    assert hearth.client.get(f"/api/functions/{fname}").json()["version"] == 1
    hearth.client.delete(f"/api/functions/{fname}")


@pytest.mark.parametrize("case", ["long-name", "file-and-dir", "symlink"])
def test_the_lambda_api_refuses_them_too(hearth: HearthServer, fname: str, case: str) -> None:
    data, named = BAD_BUNDLES[case]
    aws: Any = boto3.client(
        "lambda",
        endpoint_url=hearth.base_url,
        region_name="eu-west-1",
        aws_access_key_id="hearth",
        aws_secret_access_key=hearth.api_key,
    )
    with pytest.raises(ClientError) as refused:
        aws.create_function(
            FunctionName=fname,
            Runtime="python3.11",
            Role="arn:aws:iam::123456789012:role/lambda",
            Handler="app.handler",
            Code={"ZipFile": data},
        )
    error = refused.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400, error
    assert error["Error"]["Code"] == "InvalidParameterValueException" and named in error["Error"]["Message"], error
    assert hearth.client.get(f"/api/functions/{fname}").status_code == 404
