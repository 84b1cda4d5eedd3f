"""Containers never outlive their kernel: unload, exit and SIGKILL are all cleaned up."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import mpcontainer_magics as mpc
from mpcontainer_magics.engines.base import (
    LABEL_PID,
    LABEL_PID_START,
    owner_is_gone,
    owner_labels,
    process_start_ticks,
)
from mpcontainer_magics.workspace import reap_workspaces, workspace_prefix

KERNEL_THAT_HANGS = """
from IPython.testing.globalipapp import start_ipython
ip = start_ipython()
ip.run_line_magic("load_ext", "mpcontainer_magics")
ip.run_cell_magic("container", "--image {image} --platform linux/amd64", "echo started; sleep 600")
"""


def start_hanging_kernel(image: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(KERNEL_THAT_HANGS.format(image=image))],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "started\n"
    return proc


def test_containers_of_a_killed_kernel_are_reaped_on_next_load(ip, test_image, containers):
    proc = start_hanging_kernel(test_image)
    theirs = {LABEL_PID: str(proc.pid)}
    assert len(containers.managed(**theirs)) == 1
    proc.kill()  # SIGKILL: no atexit, no cleanup
    proc.wait()
    assert len(containers.managed(**theirs)) == 1

    ip.run_line_magic("load_ext", "mpcontainer_magics")
    try:
        reaped = ip.magics_manager.registry["ContainerMagics"].startup.result(timeout=60)
    finally:
        ip.run_line_magic("unload_ext", "mpcontainer_magics")
    assert reaped >= 1
    assert containers.managed(**theirs) == []


def test_live_kernels_containers_are_not_reaped(ip, test_image, containers):
    proc = start_hanging_kernel(test_image)
    try:
        ip.run_line_magic("load_ext", "mpcontainer_magics")
        ip.magics_manager.registry["ContainerMagics"].startup.result(timeout=60)
        ip.run_line_magic("unload_ext", "mpcontainer_magics")
        assert len(containers.managed(**{LABEL_PID: str(proc.pid)})) == 1
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: the cell stops and removes its container
        proc.wait(timeout=60)
    assert containers.managed(**{LABEL_PID: str(proc.pid)}) == []


EXITS_WHILE_RUNNING = """
import glob, json, os, threading, time
from IPython.testing.globalipapp import start_ipython
ip = start_ipython()
ip.run_line_magic("load_ext", "mpcontainer_magics")
ip.run_cell_magic("container", "--session kept --image {image}", "true")
# A cell still running when the interpreter exits (a kernel shut down mid-cell).
threading.Thread(
    target=ip.run_cell_magic,
    args=("container", "--image {image}", "sleep 600"),
    daemon=True,
).start()

def mine():
    if os.environ["MPC_ENGINE"] == "docker":
        import docker
        label = {{"label": f"io.mpcontainer-magics.pid={{os.getpid()}}"}}
        return [c["Id"] for c in docker.from_env().api.containers(filters=label)]
    found = glob.glob(os.path.join(os.environ["MPC_CACHE_DIR"], "containers", "*"))
    return [os.path.basename(path) for path in found]

while len(mine()) < 2:
    time.sleep(0.05)
print(" ".join(mine()), flush=True)
"""


def test_interpreter_exit_removes_sessions_and_running_containers(test_image, containers):
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(EXITS_WHILE_RUNNING.format(image=test_image))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    container_ids = done.stdout.split()
    assert len(container_ids) == 2
    for container_id in container_ids:
        assert not containers.exists(container_id)


def test_workspaces_of_dead_processes_are_reaped(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    ticks = process_start_ticks(gone.pid)
    gone.kill()
    gone.wait()
    dead = tmp_path / f"mpcontainer-magics-{gone.pid}-{ticks}-abc"
    alive = Path(tempfile.mkdtemp(prefix=workspace_prefix()))
    dead.mkdir()
    (dead / "left-over").write_text("x")

    assert reap_workspaces() == 1
    assert not dead.exists() and alive.is_dir()


def test_loading_the_extension_leaves_this_process_containers_alone(ip, test_image, containers):
    # Reaping at load opens the engines the kernel does not use, and closes them after: that
    # close must not take the containers of the process's other clients along.
    def load() -> int:
        ip.run_line_magic("load_ext", "mpcontainer_magics")
        return ip.magics_manager.registry["ContainerMagics"].startup.result(timeout=60)

    async def main() -> str:
        async with mpc.connect() as client:
            session = await client.session("api", image=test_image)
            try:
                await asyncio.to_thread(load)
                return (await session.run("echo alive"))[0].stdout
            finally:
                await asyncio.to_thread(ip.run_line_magic, "unload_ext", "mpcontainer_magics")

    assert asyncio.run(main()) == "alive\n"
    assert containers.mine() == []


def test_closing_one_client_leaves_another_clients_containers_alone(test_image, containers):
    # A notebook may hold its own client beside the magics' one (`%unload_ext` closes that):
    # each client removes what it made, never what another client of the process made.
    async def main() -> tuple[str, int]:
        async with mpc.connect() as mine:
            session = await mine.session("kept", image=test_image)
            async with mpc.connect() as other:
                await other.session("gone", image=test_image)
            left = len(containers.mine())
            return (await session.run("echo alive"))[0].stdout, left

    assert asyncio.run(main()) == ("alive\n", 1)
    assert containers.mine() == []


def test_a_killed_kernel_its_parent_has_not_waited_for_yet_is_gone():
    # A SIGKILLed kernel stays a zombie until its parent (Jupyter) collects it: its
    # containers are orphans already, and the next kernel must reap them.
    kernel = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    labels = {
        **owner_labels(),
        LABEL_PID: str(kernel.pid),
        LABEL_PID_START: process_start_ticks(kernel.pid),
    }
    try:
        assert not owner_is_gone(labels)
        kernel.kill()
        deadline = time.monotonic() + 10
        while Path(f"/proc/{kernel.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "the killed process never became a zombie"
            time.sleep(0.01)
        assert owner_is_gone(labels)
    finally:
        kernel.kill()
        kernel.wait()
