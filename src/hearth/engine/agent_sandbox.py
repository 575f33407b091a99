"""One sandbox class for every backend whose sandboxes run an agent (docs/protocol.md).

`AgentSandbox` owns the protocol: it loads a function (init frame), runs calls (invoke and batch
frames), warms, and poisons itself when a call times out or the agent's stream breaks. A backend
supplies only a `SandboxHost`: how to place code, apply limits, explain a crash, measure and destroy.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

from hearth.engine.channel import AgentChannel
from hearth.engine.lambda_env import init_frame
from hearth.engine.protocol import agent_exiting, batch_frame, invoke_frame, replies_of, warm_frame
from hearth.engine.sandbox import (
    Backend,
    Call,
    FunctionSpec,
    Limits,
    Reply,
    Runtime,
    Sandbox,
    SandboxCrashed,
    SandboxStartError,
    SandboxStats,
    SandboxTimeout,
)


class SandboxHost(abc.ABC):
    """What one backend does for one running sandbox; the agent protocol is not its business."""

    @abc.abstractmethod
    async def apply_limits(self, current: Limits, wanted: Limits) -> None:
        """Move the sandbox to a function's limits (SandboxStartError if it cannot, SandboxCrashed if it died)."""

    @abc.abstractmethod
    async def place(self, spec: FunctionSpec, frame: dict[str, Any]) -> None:
        """Put the function's code where the agent finds it, and say where in its `init` frame."""

    async def loaded(self, spec: FunctionSpec) -> None:
        """The function's code has loaded (e.g. seal it, rename the sandbox after its function)."""
        return None

    @abc.abstractmethod
    async def explain_crash(self, reason: str, limits: Limits) -> SandboxCrashed:
        """Why the agent's stream broke: out of memory, an exit code, or just `reason`."""

    @abc.abstractmethod
    async def destroy(self) -> None:
        """Stop and remove the sandbox; never raises."""

    @property
    def alive(self) -> bool:
        return True

    def stats(self) -> SandboxStats | None:
        return None


class AgentSandbox(Sandbox):
    def __init__(
        self,
        backend: Backend,
        sandbox_id: str,
        runtime: Runtime,
        channel: AgentChannel,
        host: SandboxHost,
        limits: Limits,
    ) -> None:
        self.id = sandbox_id
        self.backend = backend.name
        self.runtime = runtime
        self.channel = channel
        self.host = host
        self.limits = limits  # what the sandbox enforces right now
        self._backend = backend
        self._poisoned = False
        self._stopped = False

    @property
    def healthy(self) -> bool:
        return not (self._poisoned or self._stopped or self.channel.closed) and self.host.alive

    async def warm_up(self, timeout_s: float) -> None:
        """Have the agent run a throwaway function before `init` (microVM stem cells under TCG)."""
        try:
            reply = await self.channel.exchange(warm_frame(), timeout_s)
        except (SandboxCrashed, TimeoutError) as exc:
            await self.stop()
            raise SandboxStartError(f"warming the sandbox failed: {exc or 'timeout'}") from None
        if reply.get("type") != "warmed":
            await self.stop()
            raise SandboxStartError(f"warming the sandbox: expected warmed, got {reply.get('type')!r}")

    async def load(self, spec: FunctionSpec) -> float:
        wanted = self._backend.limits_for(spec)
        try:
            await self.host.apply_limits(self.limits, wanted)
        except SandboxCrashed:
            self._poisoned = True
            raise
        self.limits = wanted
        backend = self._backend
        frame = init_frame(
            spec,
            backend.identity,
            self.id,
            max_log_bytes=backend.max_log_bytes,
            max_result_bytes=backend.max_result_bytes,
        )
        await self.host.place(spec, frame)
        try:
            init_ms = await self.channel.init(frame, backend.start_timeout_s)
            await self.host.loaded(spec)
        except TimeoutError:
            self._poisoned = True
            raise SandboxStartError(f"function code did not load within {backend.start_timeout_s} s") from None
        except SandboxCrashed as exc:
            self._poisoned = True
            raise await self.host.explain_crash(str(exc), self.limits) from None
        return init_ms

    async def invoke(self, calls: Sequence[Call], timeout_s: float) -> list[Reply]:
        timeout_ms = int(timeout_s * 1000)
        if len(calls) == 1:
            frame = invoke_frame(calls[0], timeout_ms)
        else:
            frame = batch_frame(calls[0].id + "-batch", calls, timeout_ms)
        try:
            answer, payload = await self.channel.request(frame, timeout_s)
            replies = replies_of(answer, payload)
        except TimeoutError:
            self._poisoned = True
            raise SandboxTimeout(f"no answer within {timeout_s:g} s") from None
        except SandboxCrashed as exc:
            self._poisoned = True
            raise await self.host.explain_crash(str(exc), self.limits) from None
        if agent_exiting(replies):
            self._poisoned = True
        return replies

    def take_init_log(self) -> str:
        log, self.channel.init_log = self.channel.init_log, ""
        return log

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        await self.channel.close()
        await self.host.destroy()

    def stats(self) -> SandboxStats | None:
        return self.host.stats()
