"""Deploy-time checks of custom-runtime functions (language `provided`) and image functions.

An image must be in the local Docker engine and must not run as root; the version records the image's
id, so a later rebuild of the same tag reaches the function only with a new version (as Lambda
resolves a tag to a digest when the function is created or updated).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hearth.api.errors import field_error
from hearth.engine import provided
from hearth.engine.sandbox import Backend


def check_provided(values: dict[str, Any], backend: Backend, backends: Mapping[str, Backend]) -> None:
    """Refuse what cannot run (422 naming the field) and pin an image function's image id in `values`."""
    if values.get("language") != provided.LANGUAGE:
        if values.get("image"):
            raise field_error("image", "only language 'provided' functions run an image")
        values.pop("image_id", None)
        return
    if not getattr(backend, "runs_provided", False):
        able = sorted(name for name, other in backends.items() if getattr(other, "runs_provided", False))
        raise field_error(
            "backend",
            f"the {backend.name} backend does not run custom runtimes (language 'provided') or image functions; "
            f"use one of: {', '.join(able) or 'none here'}",
        )
    if values.get("concurrency", 1) != 1:
        raise field_error(
            "concurrency",
            "a custom runtime serves one invocation at a time per sandbox (the Runtime API's next/response loop): "
            "keep concurrency 1 and raise max_instances instead",
        )
    problem = provided.relay_problem()  # refused here rather than at the first call
    if problem:
        raise field_error("language", problem)
    image = values.get("image")
    if not image:
        values.pop("image_id", None)
        return
    client = getattr(backend, "client", None)
    if client is None:
        raise field_error("image", f"the {backend.name} backend cannot run images")
    try:
        config = provided.inspect_image(client, str(image))
    except provided.ProvidedError as exc:
        raise field_error("image", str(exc)) from None
    refused = provided.image_refusal(config)
    if refused:
        raise field_error("image", refused)
    values["image_id"] = config.image_id
