"""Inside a real Jupyter kernel, whose event loop is already running.

The magic must not try to run its own loop there, ``await`` on the API must work in a cell,
and a kernel interrupt (the notebook's stop button) must stop and remove the cell's
containers and leave the kernel usable.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Containers, alive, tracees
from jupyter_client.manager import start_new_kernel

from mpcontainer_magics.engines.base import LABEL_PID
from mpcontainer_magics.engines.proot import processes_using


@pytest.fixture
def kernel(engine_kind: str) -> Iterator[tuple[Any, Any]]:
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        yield km, kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)


def execute(kc: Any, code: str, timeout: float = 120) -> tuple[dict[str, Any], list[dict]]:
    outputs: list[dict] = []

    def keep(msg: dict) -> None:
        if msg["header"]["msg_type"] in {"stream", "display_data", "execute_result", "error"}:
            outputs.append(msg)

    reply = kc.execute_interactive(code, output_hook=keep, timeout=timeout)
    return reply["content"], outputs


def text_of(outputs: list[dict], name: str = "stdout") -> str:
    return "".join(m["content"]["text"] for m in outputs if m["content"].get("name") == name)


def test_magic_and_await_inside_a_kernel(kernel, test_image, containers):
    km, kc = kernel
    reply, _ = execute(kc, "%load_ext mpcontainer_magics")
    assert reply["status"] == "ok"

    cell = (
        f"%%container --image {test_image} --platform linux/amd64,linux/s390x --out res\nuname -m"
    )
    reply, outputs = execute(kc, cell)
    assert reply["status"] == "ok"
    assert "[linux/s390x] s390x" in text_of(outputs)
    html = [m["content"]["data"].get("text/html", "") for m in outputs if "data" in m["content"]]
    assert any("<table" in h and "linux/s390x" in h for h in html), "no table displayed"

    code = (
        "import mpcontainer_magics as mpc\n"
        "async with mpc.connect() as client:\n"
        f"    r = await client.run('uname -m', platforms='linux/arm64', image={test_image!r})\n"
        "print('awaited:', r[0].stdout.strip())"
    )
    reply, outputs = execute(kc, code)
    assert reply["status"] == "ok", reply
    assert "awaited: aarch64" in text_of(outputs)

    # The stop button: interrupt while two containers run.
    _, outputs = execute(kc, "import os; print(os.getpid())")
    theirs = {LABEL_PID: text_of(outputs).strip()}
    kc.execute(f"%%container --image {test_image} --platform linux/amd64,linux/arm64\nsleep 120")
    deadline = time.monotonic() + 60
    while len([c for c in containers.managed(**theirs) if c["State"] == "running"]) < 2:
        assert time.monotonic() < deadline, "the cell's containers never started"
        time.sleep(0.05)
    interrupted = time.monotonic()
    km.interrupt_kernel()
    reply = kc.get_shell_msg(timeout=60)["content"]
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
    assert time.monotonic() - interrupted < 30
    assert containers.managed(**theirs) == []

    reply, outputs = execute(kc, "res['linux/amd64'].stdout")
    assert reply["status"] == "ok"  # the kernel and the extension still work


def test_kernel_shutdown_removes_sessions(test_image, containers):
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        execute(kc, "%load_ext mpcontainer_magics")
        reply, outputs = execute(
            kc,
            f"%%container --session s --image {test_image} --platform linux/arm64\nuname -m",
        )
        assert reply["status"] == "ok" and "aarch64" in text_of(outputs)
        _, outputs = execute(kc, "import os; print(os.getpid())")
        theirs = {LABEL_PID: text_of(outputs).strip()}
        assert len(containers.managed(**theirs)) == 1
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)  # what the notebook's "Shut Down Kernel" does
    assert containers.managed(**theirs) == []


def test_a_killed_kernel_on_another_engine_is_reaped_by_the_next(
    test_image, docker_api, blob_cache, monkeypatch
):
    """Kernel 1 starts on Docker (the default) and switches to the embedded engine with
    %config; it is SIGKILLed mid-cell. Kernel 2, on Docker, must reap its proot processes and
    container directories all the same: reaping at load asks every engine of this machine."""
    monkeypatch.delenv("MPC_ENGINE", raising=False)
    embedded = Containers("embedded", docker_api, blob_cache)
    first = start_new_kernel(kernel_name="python3")
    second = None
    ran: list[int] = []
    try:
        _, kc = first
        execute(kc, "%load_ext mpcontainer_magics")
        execute(kc, '%config ContainerMagics.engine = "embedded"')
        _, outputs = execute(kc, "import os; print(os.getpid())")
        pid = int(text_of(outputs))
        kc.execute(f"%%container --image {test_image} --platform linux/arm64\nsleep 600")
        ran = _running_processes_of(embedded, pid)
        os.kill(pid, signal.SIGKILL)  # no atexit, no clean-up
        while first[0].is_alive():  # which also reaps it, as the notebook server would
            time.sleep(0.05)

        second = start_new_kernel(kernel_name="python3")
        reply, _ = execute(second[1], "%load_ext mpcontainer_magics")
        assert reply["status"] == "ok"
        deadline = time.monotonic() + 30
        while (embedded.managed(**{LABEL_PID: str(pid)}) or any(map(alive, ran))) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.1)
        assert embedded.managed(**{LABEL_PID: str(pid)}) == []
        assert [p for p in ran if alive(p)] == []
        assert not any((blob_cache / "containers").iterdir())
    finally:
        for km, kc in [k for k in (first, second) if k is not None]:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
        for leftover in ran:  # whatever failed, nothing of kernel 1 may outlive the test
            with contextlib.suppress(OSError):
                os.killpg(leftover, signal.SIGKILL)  # a proot leads its guests' group


def _running_processes_of(embedded: Containers, pid: int) -> list[int]:
    """The proot processes of kernel ``pid``'s embedded container, and what they trace."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        running = [c for c in embedded.managed(**{LABEL_PID: str(pid)}) if c["State"] == "running"]
        if running:
            rootfs = embedded.rootfs(running[0]["Id"])
            proots = processes_using(rootfs)
            guests = [g for p in proots for g in tracees(p)]
            if guests:
                return proots + guests
        time.sleep(0.05)
    raise AssertionError("the kernel's embedded container never started")
