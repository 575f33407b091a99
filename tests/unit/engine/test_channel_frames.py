"""The channel's stream parser: frames however the bytes arrive (one at a time, several per read, split anywhere)."""

from __future__ import annotations

import asyncio
import random
import socket

import pytest

from hearth.engine.channel import AgentChannel
from hearth.engine.protocol import HEADER, MAX_FRAME_BYTES, encode_frame
from hearth.engine.sandbox import SandboxCrashed


async def multiplexing_channel() -> tuple[AgentChannel, socket.socket]:
    host_end, agent_end = socket.socketpair()
    reader, writer = await asyncio.open_unix_connection(sock=host_end)
    channel = AgentChannel(reader, writer)
    agent_end.sendall(encode_frame({"type": "ready", "init_ms": 1.0}) + encode_frame({"id": "early"}))
    await channel.init({"type": "init"}, 5)
    return channel, agent_end


def test_frames_split_anywhere_reach_their_calls() -> None:
    async def main() -> None:
        channel, agent = await multiplexing_channel()
        rng = random.Random(7)
        big = bytes(rng.getrandbits(8) for _ in range(300_000))
        frames = [(f"c{i}", big[: rng.randrange(0, len(big))] if i % 3 == 0 else b"ok") for i in range(30)]
        calls = [asyncio.ensure_future(channel.request({"id": call_id}, 10)) for call_id, _ in frames]
        await asyncio.sleep(0)
        wire = b"".join(
            HEADER.pack(len(body)) + body
            for call_id, payload in frames
            for body in [f'{{"id":"{call_id}","ok":true}}\n'.encode() + payload]
        )
        agent.setblocking(False)
        at = 0
        while at < len(wire):  # odd sizes: headers and bodies split across reads
            step = rng.choice([1, 3, 4, 5, 1000, 65_536, 200_000])
            await asyncio.get_running_loop().sock_sendall(agent, wire[at : at + step])
            at += step
            await asyncio.sleep(0)
        for (call_id, payload), call in zip(frames, calls, strict=True):
            frame, got = await call
            assert frame["id"] == call_id and got == payload
        await channel.close()
        agent.close()

    asyncio.run(asyncio.wait_for(main(), 10))


def test_an_oversized_frame_fails_the_waiting_calls() -> None:
    async def main() -> None:
        channel, agent = await multiplexing_channel()
        call = asyncio.ensure_future(channel.request({"id": "x"}, 10))
        await asyncio.sleep(0)
        agent.sendall(HEADER.pack(MAX_FRAME_BYTES + 1))
        with pytest.raises(SandboxCrashed, match="limit"):
            await call
        assert channel.closed
        agent.close()

    asyncio.run(asyncio.wait_for(main(), 10))


def test_the_agent_going_away_fails_the_waiting_calls() -> None:
    async def main() -> None:
        channel, agent = await multiplexing_channel()
        call = asyncio.ensure_future(channel.request({"id": "x"}, 10))
        await asyncio.sleep(0)
        agent.sendall(HEADER.pack(10) + b"{}")  # half a frame, then the end of the stream
        agent.close()
        with pytest.raises(SandboxCrashed, match="closed"):
            await call

    asyncio.run(asyncio.wait_for(main(), 10))


def test_each_call_times_out_at_its_own_deadline() -> None:
    """One timer serves the channel: an answered call leaves it be, every late call still fails at its deadline."""

    async def main() -> None:
        channel, agent = await multiplexing_channel()
        loop = asyncio.get_running_loop()
        started = loop.time()
        slow = asyncio.ensure_future(channel.request({"id": "slow"}, 0.6))
        answered = asyncio.ensure_future(channel.request({"id": "answered"}, 0.1))
        quick = asyncio.ensure_future(channel.request({"id": "quick"}, 0.2))
        await asyncio.sleep(0.05)
        agent.sendall(encode_frame({"id": "answered", "ok": True}))
        assert (await answered)[0]["id"] == "answered"
        with pytest.raises(TimeoutError):
            await quick
        assert 0.19 <= loop.time() - started < 0.5
        assert not slow.done()
        with pytest.raises(TimeoutError):
            await slow
        assert 0.59 <= loop.time() - started < 0.9
        later = asyncio.ensure_future(channel.request({"id": "later"}, 0.1))  # the timer arms again
        with pytest.raises(TimeoutError):
            await later
        await channel.close()
        agent.close()

    asyncio.run(asyncio.wait_for(main(), 10))
