"""What the engine holds at one moment, as plain data: what metrics and the API read instead of the
engine's pools and stem cells themselves."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class InstanceCounts:
    warm: int = 0  # idle, loaded with a version
    busy: int = 0  # serving at least one call
    starting: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"warm": self.warm, "busy": self.busy, "starting": self.starting}


@dataclass(frozen=True)
class EngineSnapshot:
    # per function with a pool: its current versions' instances (retiring versions' are not counted)
    functions: dict[str, InstanceCounts] = field(default_factory=dict)
    total: InstanceCounts = InstanceCounts()  # every pool's, retiring ones included
    waiting_calls: int = 0  # calls waiting for a free instance
    stem_cells: dict[str, int] = field(default_factory=dict)  # "backend/runtime" -> ready stem cells
    stem_cells_ready: int = 0
