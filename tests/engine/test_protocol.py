"""The host's side of the agent protocol on its own (hearth.engine.protocol, hearth.engine.batch_handler).

Pure functions over bytes: how a frame's payload is found, how results are cut from it, what an
agent that breaks the rules gets (a ProtocolError: the sandbox is then treated as crashed), and how a
batch handler's one reply becomes one reply per call. The agents' side: test_agent_conformance.py.
"""

from __future__ import annotations

import pytest

from hearth.engine.batch_handler import batch_call, split_reply
from hearth.engine.protocol import ProtocolError, decode_body, replies_of
from hearth.engine.sandbox import Call, Reply


def test_the_first_newline_ends_the_json_object() -> None:
    assert decode_body(b'{"type":"hello"}') == ({"type": "hello"}, None)
    frame, payload = decode_body(b'{"type":"result","id":"a","ok":true}\n{"x":\n1}')
    assert frame["id"] == "a" and payload == b'{"x":\n1}'
    assert decode_body(b'{"type":"result"}\n') == ({"type": "result"}, b"")


@pytest.mark.parametrize("body", [b"[1,2]", b"not json", b'"text"\n{}'])
def test_a_body_that_is_not_an_object_breaks_the_stream(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_body(body)


def test_a_result_is_the_payload_as_sent() -> None:
    frame, payload = decode_body(b'{"type":"result","id":"a","ok":true,"stdout":"hi\\n","cpu_ms":0.5}\n1.50')
    (reply,) = replies_of(frame, payload)
    assert (reply.id, reply.ok, reply.result, reply.stdout, reply.cpu_ms) == ("a", True, b"1.50", "hi\n", 0.5)


def test_an_inline_result_is_encoded_once_by_the_host() -> None:
    """Agents that send no payload (the custom runtimes' relay) put the result in the object."""
    (reply,) = replies_of({"type": "result", "id": "a", "ok": True, "result": {"k": [1, 2]}}, None)
    assert reply.result == b'{"k":[1,2]}'


def test_batch_results_are_cut_from_the_payload_by_their_sizes() -> None:
    frame = {
        "type": "batch_result",
        "id": "a-batch",
        "results": [
            {"id": "a", "ok": True, "result_bytes": 3},
            {"id": "b", "ok": False, "error": {"type": "ValueError", "message": "no"}},
            {"id": "c", "ok": True, "result_bytes": 4},
        ],
    }
    replies = replies_of(frame, b'"x"null')
    assert [(r.id, r.ok, r.result) for r in replies] == [("a", True, b'"x"'), ("b", False, None), ("c", True, b"null")]
    assert replies[1].error == {"type": "ValueError", "message": "no"}


@pytest.mark.parametrize(
    ("frame", "payload"),
    [
        ({"type": "batch_result", "results": [{"id": "a", "ok": True, "result_bytes": 9}]}, b"1"),
        ({"type": "batch_result", "results": [{"id": "a", "ok": True}, {"id": "b", "ok": True}]}, b"12"),
        ({"type": "batch_result", "results": "nope"}, None),
        ({"type": "batch_result", "results": [7]}, None),
    ],
)
def test_sizes_that_do_not_fit_the_payload_break_the_stream(frame: dict, payload: bytes | None) -> None:  # type: ignore[type-arg]
    with pytest.raises(ProtocolError):
        replies_of(frame, payload)


CALLS = [Call("a", {"n": 1}), Call("b", {"n": 2}), Call("c", {"n": 3})]


def test_a_batch_handler_gets_the_events_as_one_list() -> None:
    call = batch_call(CALLS)
    assert (call.id, call.event) == ("a-batch", [{"n": 1}, {"n": 2}, {"n": 3}])


def test_a_batch_handlers_list_is_split_one_result_per_call() -> None:
    reply = Reply("a-batch", True, b"[10, 20, 30]", stdout="out", stderr="err", logs_truncated=True, duration_ms=4.0)
    replies = split_reply(reply, CALLS)
    assert [(r.id, r.ok, r.result) for r in replies] == [("a", True, b"10"), ("b", True, b"20"), ("c", True, b"30")]
    assert [(r.stdout, r.stderr, r.logs_truncated) for r in replies] == [("out", "err", True)] + [("", "", False)] * 2
    assert all(r.duration_ms == 4.0 for r in replies)


@pytest.mark.parametrize("result", [b"[1, 2]", b'{"a": 1}', b"null"])
def test_a_batch_handlers_result_of_the_wrong_shape_fails_every_call(result: bytes) -> None:
    replies = split_reply(Reply("a-batch", True, result), CALLS)
    assert all(not r.ok and r.error is not None and r.error["type"] == "BatchResultMismatch" for r in replies)


def test_a_batch_handlers_error_is_every_calls_error() -> None:
    error = {"type": "ValueError", "message": "boom"}
    replies = split_reply(Reply("a-batch", False, error=error, stdout="trace"), CALLS)
    assert [(r.ok, r.error) for r in replies] == [(False, error)] * 3
    assert [r.stdout for r in replies] == ["trace", "", ""]
