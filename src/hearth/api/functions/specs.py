"""A stored function version as the engine runs it: the row's columns and its `extra` settings, typed.

The only place that reads a version row's `extra` JSON for the engine; the registry, the engine and
the scheduler see typed `FunctionSpec` fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hearth.engine.sandbox import BatchSettings, FunctionSpec
from hearth.packaging.deps import LAYER_SUBDIR, LAYERS_DIR
from hearth.store.models import FunctionVersion


def spec_from_version(row: FunctionVersion, name: str, code_root: Path) -> FunctionSpec:
    extra: dict[str, Any] = dict(row.extra or {})
    retries = extra.get("retries")
    return FunctionSpec(
        name=name,
        version=row.version,
        language=row.language,  # type: ignore[arg-type]
        handler=row.handler,
        code_dir=code_root / row.code_path,
        timeout_s=row.timeout_s,
        memory_mb=row.memory_mb,
        cpus=row.cpus,
        env=dict(row.env or {}),
        backend=row.backend,
        min_warm=row.min_warm,
        max_instances=row.max_instances,
        concurrency=row.concurrency,
        network=row.network,
        route=row.route,
        auth=row.auth,
        layer_dir=layer_dir(code_root, row.language, extra.get("layer")),
        runtime=str(extra.get("runtime") or ""),
        image=str(extra.get("image_id") or extra.get("image") or "") or None,
        batch=batch_settings(extra.get("batch")),
        retries=None if retries is None else int(retries),
        schedule=tuple(str(expression) for expression in extra.get("schedule") or ()),
        http_payload_format=str(extra.get("http_payload_format") or "2.0"),
    )


def batch_settings(raw: Any) -> BatchSettings | None:
    if not raw:
        return None
    return BatchSettings(int(raw.get("max_size", 1)), float(raw.get("max_wait_ms", 0)), bool(raw.get("batch_handler")))


def layer_dir(code_root: Path, language: str, layer: str | None) -> Path | None:
    """A version's dependency layer: `<code root>/layers/<key>/<python|node_modules>` (see hearth.packaging)."""
    if not layer:
        return None
    return code_root / LAYERS_DIR / layer / LAYER_SUBDIR[language]
