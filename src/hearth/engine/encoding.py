"""JSON as Hearth writes it: orjson, with Python's json for what orjson refuses."""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # integers beyond 64 bits, which Python's json (the agents) allows
        return json.dumps(value, separators=(",", ":")).encode()
