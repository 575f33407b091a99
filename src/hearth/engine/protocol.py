"""The agent protocol (docs/protocol.md), defined once on the host side: frames, their encoding, replies.

A frame is a 4-byte big-endian length and that many bytes: a JSON object, optionally followed by a
newline and a raw *payload*. Compact JSON never holds a raw newline, so the first one ends the object.
Agents send a call's encoded result as the payload, so the host hands those bytes on (HTTP response,
Lambda API, job store) without parsing them and encoding them again.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from typing import Any

import orjson

from hearth.engine.sandbox import Call, Reply, SandboxCrashed

HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 64 * 1024 * 1024
PAYLOAD_SEPARATOR = b"\n"
# The custom runtimes' relay answers this when its runtime exited before answering, then exits itself.
EXIT_ERROR = "Runtime.ExitError"


class ProtocolError(SandboxCrashed):
    """The agent broke the protocol: its stream cannot be trusted any more."""


def encode_frame(frame: dict[str, Any]) -> bytes:
    body = orjson.dumps(frame)
    return HEADER.pack(len(body)) + body


def decode_body(body: bytes) -> tuple[dict[str, Any], bytes | None]:
    """A frame's body as (the JSON object, the payload after it or None)."""
    head, separator, payload = body.partition(PAYLOAD_SEPARATOR)
    try:
        frame = orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"agent sent a frame that is not JSON: {exc}") from None
    if not isinstance(frame, dict):
        raise ProtocolError("agent sent a frame that is not a JSON object")
    return frame, (payload if separator else None)


# ----- host → agent


def warm_frame() -> dict[str, Any]:
    return {"type": "warm"}


def invoke_frame(call: Call, timeout_ms: int) -> dict[str, Any]:
    frame = {"type": "invoke", "id": call.id, "event": call.event, "timeout_ms": timeout_ms}
    if call.client_context is not None:
        frame["client_context"] = call.client_context
    return frame


def batch_frame(batch_id: str, calls: Sequence[Call], timeout_ms: int) -> dict[str, Any]:
    """Calls the agent runs one after another, each with its own logs, duration and error."""
    items = []
    for call in calls:
        item = {"id": call.id, "event": call.event}
        if call.client_context is not None:
            item["client_context"] = call.client_context
        items.append(item)
    return {"type": "batch", "id": batch_id, "items": items, "timeout_ms": timeout_ms}


# ----- agent → host


def encode_json(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # integers beyond 64 bits, which Python's json (the agents) allows
        return json.dumps(value, separators=(",", ":")).encode()


def decode_json(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:  # integers beyond 64 bits; anything else fails here too
        return json.loads(data)


def agent_exiting(replies: Sequence[Reply]) -> bool:
    """Whether an answer says its agent is going away (the relay after its runtime exited). The host may read
    that answer before the stream's end (a container's socket closes a moment later; a VM's port stays open
    until the supervisor's exit report and QEMU are gone), so the sandbox is spent as the answer comes in."""
    for reply in replies:  # noqa: SIM110 (a loop, not any(): no generator object on every call)
        if reply.error is not None and reply.error.get("type") == EXIT_ERROR:
            return True
    return False


def replies_of(frame: dict[str, Any], payload: bytes | None) -> list[Reply]:
    """The replies a `result` or `batch_result` frame carries.

    An ok item's result is its share of the payload (`result_bytes` of it, in order; a lone result
    frame's is the whole payload), or, from an agent that sends no payload, its inline `result`.
    """
    if frame.get("type") != "batch_result":  # one call's result: all of the payload
        if not frame.get("ok"):
            return [_reply(frame, None)]
        return [_reply(frame, payload if payload is not None else encode_json(frame.get("result")))]
    items = frame.get("results")
    if not isinstance(items, list):
        raise ProtocolError("batch_result without a list of results")
    replies = []
    offset = 0
    for item in items:
        if not isinstance(item, dict):
            raise ProtocolError("a reply that is not a JSON object")
        result: bytes | None = None
        if item.get("ok"):
            if payload is not None:
                size = item.get("result_bytes")
                if not isinstance(size, int) or size < 0 or offset + size > len(payload):
                    raise ProtocolError("a result whose size does not fit the frame's payload")
                result = payload[offset : offset + size]
                offset += size
            else:
                result = encode_json(item.get("result"))
        replies.append(_reply(item, result))
    return replies


def _reply(item: dict[str, Any], result: bytes | None) -> Reply:
    cpu_ms, max_rss_kb = item.get("cpu_ms"), item.get("max_rss_kb")
    error = item.get("error")
    return Reply(
        id=str(item.get("id")),
        ok=bool(item.get("ok")),
        result=result,
        error=error if isinstance(error, dict) else None,
        stdout=item.get("stdout") or "",
        stderr=item.get("stderr") or "",
        logs_truncated=bool(item.get("logs_truncated")),
        duration_ms=float(item.get("duration_ms") or 0.0),
        cpu_ms=float(cpu_ms) if isinstance(cpu_ms, int | float) else None,
        max_rss_kb=int(max_rss_kb) if isinstance(max_rss_kb, int | float) else None,
    )
