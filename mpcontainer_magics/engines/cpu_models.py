"""The CPU model QEMU emulates for each foreign architecture: the fastest faithful one.

QEMU's default CPU for a user-mode arm64 guest is ``max``, which authenticates pointers
with the QARMA algorithm, slow under TCG. Debian 13, Ubuntu and Fedora build their arm64
packages with ``-mbranch-protection=standard`` (Debian 13's python3.13 has 14,142 PAC
instructions), so their code runs 6-40x slower than it needs to. ``max,pauth-impdef=on``
keeps pointer authentication (signatures are still made and checked; only the hash
function differs from a real core's), so programs behave as on hardware; ``pauth=off``
would remove the feature, which no longer is arm64 as distributions build it. QEMU >= 10
makes impdef its default; Debian 12's 7.2 and Ubuntu 24.04's 8.2 do not, nor do Docker,
buildx or Dagger set it. Other architectures keep QEMU's default (nothing measured faster
and as faithful).

The model reaches QEMU as ``QEMU_CPU`` in the container's environment, which every
qemu-user binary reads, whether the kernel's binfmt handler starts it (Docker) or proot
does (the embedded engine). Hence the rules:

- only containers of an emulated architecture with a model get it, and the user's own
  ``QEMU_CPU`` (``-e``, or exported in a cell) wins;
- a QEMU that does not know a property refuses to start, so each engine proves a model
  with a tiny program of that architecture first (``ModelCheck``): a default its QEMU
  refuses is left out (and the user told once), a model the user chose is an error;
- a 32-bit arm program started in an arm64 container reads it too, and ``qemu-arm``
  refuses ``pauth-impdef``: the run then says why (``refused_by_qemu``).

Users choose per platform: ``{"linux/arm64": "cortex-a72"}``, or "" for QEMU's own
default, through ``connect(cpu_models=...)``, ``%config ContainerMagics.cpu_models`` or,
for a whole hub, ``$MPC_CPU_MODELS`` (that mapping as JSON).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from .._aio import once
from ..errors import EngineError, InvalidArgument
from ..platforms import Platform

#: The variable every qemu-user binary reads its ``-cpu`` from.
QEMU_CPU = "QEMU_CPU"
#: Models for a whole hub, as JSON: {"linux/arm64": "max"}.
MODELS_ENV = "MPC_CPU_MODELS"

#: Per architecture, the fastest model that keeps the architecture's behaviour.
DEFAULT_MODELS: Mapping[str, str] = {"arm64": "max,pauth-impdef=on"}

#: How a qemu-user binary refuses a model or a property it lacks.
_REFUSED = re.compile(r"\S+: (?:can't apply global \S+|unable to find CPU model \S+)[^\n]*")


def parse_models(spec: Mapping[str, str | None] | None) -> dict[Platform, str]:
    """``{"linux/arm64": "cortex-a72", "linux/s390x": ""}`` as platforms and models; ""
    (or None) is QEMU's own default."""
    models = {}
    for platform, model in (spec or {}).items():
        if model is not None and not isinstance(model, str):
            raise InvalidArgument(
                f"the CPU model for {platform} must be text such as 'max' ('' for QEMU's "
                f"default), not {model!r}"
            )
        if model and (model.strip() != model or not re.fullmatch(r"[\w.,=+-]+", model)):
            raise InvalidArgument(
                f"bad CPU model {model!r} for {platform}: write it as QEMU's -cpu takes it, "
                "e.g. 'max,pauth-impdef=on' or 'cortex-a72'"
            )
        models[Platform.parse(platform)] = model or ""
    return models


def models_from_env() -> dict[str, str]:
    """The models ``$MPC_CPU_MODELS`` names (JSON), e.g. for every kernel of a hub."""
    text = os.environ.get(MODELS_ENV, "").strip()
    if not text:
        return {}
    try:
        models = json.loads(text)
    except ValueError:
        models = None
    if not isinstance(models, dict):
        raise InvalidArgument(
            f"{MODELS_ENV} must be JSON mapping platforms to QEMU CPU models, like "
            '{"linux/arm64": "max"}; fix or unset it'
        )
    return models


@dataclass
class CpuModels:
    """Which model each emulated platform gets: the user's choice, else ``DEFAULT_MODELS``.

    One object is shared by a client's engines (its nodes too), so a change of
    ``%config ContainerMagics.cpu_models`` reaches them all.
    """

    chosen: dict[Platform, str] = field(default_factory=dict)

    def choose(self, spec: Mapping[str, str | None] | None) -> None:
        self.chosen = parse_models(spec)

    def wanted(self, platform: Platform) -> tuple[str, bool]:
        """The model for ``platform`` ("" for QEMU's default) and whether the user chose it."""
        for chosen, model in self.chosen.items():
            if platform.matches(chosen):
                return model, True
        return DEFAULT_MODELS.get(platform.architecture, ""), False


#: Runs a tiny program of ``platform`` with ``QEMU_CPU=model``: None when it ran, else
#: what QEMU said (its refusal).
TryModel = Callable[[Platform, str], Awaitable[str | None]]


class ModelCheck:
    """An engine's QEMU and the models it accepts, each proven once by ``try_model``;
    ``note`` tells the user (once) of a default model that was refused."""

    def __init__(self, try_model: TryModel, where: str, note: Callable[[str], None]) -> None:
        self._try = try_model
        self._where = where
        self._note = note
        self._tried: dict[tuple[str, str], asyncio.Task[str | None]] = {}
        self._said: set[tuple[str, str]] = set()

    async def model_for(self, platform: Platform, models: CpuModels) -> str:
        """The model an emulated ``platform`` gets here ("" for QEMU's own default)."""
        model, chosen = models.wanted(platform)
        if not model:
            return ""
        key = (platform.architecture, model)
        refused = await once(self._tried, key, lambda: self._try(platform, model))
        if refused is None:
            return model
        if chosen:
            raise EngineError(
                f"the QEMU of {self._where} refuses CPU model {model!r} for {platform} "
                f"({refused}); choose another (`qemu-{platform.qemu_arch} -cpu help` lists "
                f"them) or '' for QEMU's default in cpu_models"
            )
        if key not in self._said:
            self._said.add(key)
            self._note(
                f"{platform}: the QEMU of {self._where} does not take CPU model {model!r} "
                f"({refused}); its default CPU is used instead, which may be slower"
            )
        return ""


def with_model(env: Mapping[str, str], model: str) -> dict[str, str]:
    """``env`` with ``QEMU_CPU=model``, unless the user set their own (or there is none)."""
    if not model or QEMU_CPU in env:
        return dict(env)
    return {**env, QEMU_CPU: model}


def refused_by_qemu(stderr: str) -> str | None:
    """A qemu-user binary's refusal of its ``QEMU_CPU`` in a command's stderr, if any."""
    found = _REFUSED.search(stderr)
    return found.group(0).strip() if found else None


def refusal_note(platform: Platform, refusal: str) -> str:
    """What a row whose program QEMU refused to start should tell the user."""
    return (
        f"{platform}: {refusal}. QEMU_CPU in the container names the CPU model for "
        f"{platform.architecture} programs, and a program of another architecture started "
        "in it (a 32-bit arm one in an arm64 container, say) reads it too: run that one with "
        f"`env -u {QEMU_CPU} PROGRAM`, or set cpu_models {{'{platform}': ''}}"
    )
