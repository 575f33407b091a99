"""How long a dependency build takes: `python -m bench.builds [--runs 5]`.

A Hearth server of its own; per run, a new function is deployed with a small dependency list
(Python: `six==1.16.0`; JavaScript: `is-number@7.0.0`) and the deploy's wall time and the build's
own `duration_ms` are recorded. The layer is deleted after each run, so every run builds (no layer
cache; pip and npm caches live and die with each build's sandbox). Medians and p95. Written to
bench/results/builds.json.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import summary_ms
from hearth.testing import HearthServer, b64_zip

RESULTS = Path(__file__).resolve().parent / "results"
BUNDLES: dict[str, tuple[str, dict[str, str]]] = {
    "python": (
        "app.handler",
        {
            "app.py": "import six\ndef handler(event, context):\n    return six.__version__\n",
            "requirements.txt": "six==1.16.0\n",
        },
    ),
    "javascript": (
        "index.handler",
        {
            "index.js": "const n = require('is-number');\nexports.handler = async () => n(1);\n",
            "package.json": '{"dependencies": {"is-number": "7.0.0"}}',
        },
    ),
}


def build_once(server: HearthServer, language: str) -> tuple[float, float]:
    """(deploy wall ms, build duration ms) of one uncached build."""
    handler, files = BUNDLES[language]
    name = f"bench-{language[:2]}-{secrets.token_hex(3)}"
    body = {"name": name, "language": language, "handler": handler, "zip_base64": b64_zip(files)}
    started = time.perf_counter()
    response = server.client.post("/api/functions", json=body, timeout=600)
    wall = (time.perf_counter() - started) * 1000
    response.raise_for_status()
    created = response.json()
    build = server.client.get(f"/api/functions/{name}/builds/{created['build_id']}").json()
    assert build["cached"] is False, "the layer was reused: the run measured nothing"
    shutil.rmtree(server.data_dir / "code" / "layers" / created["layer"])
    server.client.delete(f"/api/functions/{name}")
    return wall, float(build["duration_ms"])


def run(runs: int) -> dict[str, Any]:
    server = HearthServer(Path(tempfile.mkdtemp(prefix="hearth-builds-bench-")) / "data")
    server.start()
    try:
        results: dict[str, Any] = {}
        for language in BUNDLES:
            build_once(server, language)  # warm-up: image and page caches, the index config read
            walls, builds = zip(*(build_once(server, language) for _ in range(runs)), strict=True)
            results[language] = {"deploy": summary_ms(list(walls)), "build": summary_ms(list(builds))}
        return results
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    results = run(args.runs)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "builds.json").write_text(json.dumps(results, indent=2) + "\n")
    for language, figures in results.items():
        deploy, build = figures["deploy"], figures["build"]
        print(
            f"{language}: deploy p50 {deploy['p50_ms']:.0f} ms, build p50 {build['p50_ms']:.0f} ms "
            f"(p95 {build['p95_ms']:.0f} ms, n={build['n']})"
        )


if __name__ == "__main__":
    main()
