"""A batch handler's round trip, on the host: the events go in as one list, the list that comes back is split.

The agent sees an ordinary call whose event is a list; the policy (one result per event, the first
item carries the logs) lives here, the same for every runtime.
"""

from __future__ import annotations

from collections.abc import Sequence

from hearth.engine.protocol import decode_json, encode_json
from hearth.engine.sandbox import Call, Reply


def batch_call(calls: Sequence[Call]) -> Call:
    """The one call that hands every event of `calls` to the handler at once."""
    return Call(calls[0].id + "-batch", [call.event for call in calls])


def split_reply(reply: Reply, calls: Sequence[Call]) -> list[Reply]:
    """One reply per call from the handler's single reply: its list's items, or its error for each."""
    results = decode_json(reply.result) if reply.ok and reply.result is not None else None
    if isinstance(results, list) and len(results) == len(calls):
        replies = [Reply(call.id, True, encode_json(result)) for call, result in zip(calls, results, strict=True)]
    else:
        error = reply.error or {
            "type": "BatchResultMismatch",
            "message": f"batch handler must return a list of {len(calls)} results",
            "traceback": "",
        }
        replies = [Reply(call.id, False, error=error) for call in calls]
    for k, item in enumerate(replies):
        item.duration_ms = reply.duration_ms
        if k == 0:
            item.stdout, item.stderr, item.logs_truncated = reply.stdout, reply.stderr, reply.logs_truncated
    return replies
