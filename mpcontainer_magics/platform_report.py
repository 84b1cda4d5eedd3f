"""What an engine can run, and what an image offers: the report of ``client.platforms()``
and ``%container platforms`` (with nodes: where each platform would run, and why)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .platforms import Platform
from .targets import Target, how_it_runs

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True, repr=False)
class PlatformReport:
    """What an engine can run, and (for an image) what the image offers."""

    engine: str
    native: Platform
    emulated: tuple[Platform, ...]
    image: str | None = None
    offered: tuple[Platform, ...] = ()
    chosen: str = ""  # why this engine, when "auto" picked it
    placed: tuple[Target, ...] = ()  # with nodes: where each platform would run

    def target(self, platform: Platform) -> Target:
        """How ``platform`` runs (with nodes: where), and why (see :mod:`.targets`)."""
        for target in self.placed:
            if target.platform.matches(platform):
                return target
        return how_it_runs(self.engine, platform, self.native, self.emulated)

    def runnable(self, platform: Platform) -> str:
        """ "native", "emulated" or "no emulation" (also for non-Linux platforms)."""
        runs = self.target(platform).runs
        return "no emulation" if runs == "no" else runs

    def _how(self, platform: Platform) -> str:
        """ "emulated", or with nodes "emulated on ctx"."""
        node = self.target(platform).node
        return f"{self.runnable(platform)} on {node}" if node else self.runnable(platform)

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        listed = list(self.offered) if self.image else [self.native, *self.emulated]
        if not self.placed:
            rows = [{"platform": str(p), "runs": self.runnable(p)} for p in listed]
            return pd.DataFrame(rows, columns=["platform", "runs"])
        listed += [t.platform for t in self.placed if t.platform not in listed]
        targets = [self.target(p) for p in listed]
        rows = [
            {"platform": str(t.platform), "runs": self.runnable(t.platform), "node": t.node,
             "why": t.why}
            for t in targets
        ]  # fmt: skip
        return pd.DataFrame(rows, columns=["platform", "runs", "node", "why"])

    def __repr__(self) -> str:
        lines = [
            f"engine: {self.engine}" + (f" ({self.chosen})" if self.chosen else ""),
            f"native platform: {self.native}",
            "emulated platforms: " + (", ".join(map(str, self.emulated)) or "none"),
        ]
        if self.image:
            offered = ", ".join(f"{p} ({self._how(p)})" for p in self.offered)
            lines.append(f"{self.image} offers: {offered or 'nothing'}")
        return "\n".join(lines)
