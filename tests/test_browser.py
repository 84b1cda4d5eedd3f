"""Notebook 06 in a real browser: JupyterLab on 127.0.0.1, headless Chromium driven by
Playwright, as a reader would use it.

The test serves a temporary directory holding a copy of notebooks/06-widget-app.ipynb
(random free port, token auth, MPC_DEMO_IMAGE / MPC_REGISTRY pointing at the local test
image and registry), opens it, runs all cells from the Run menu, types a command into the
widget, clicks its Run button and checks that every platform's output and the result table
appear in the page. Then the kernel is shut down and must have removed its containers.

Playwright cannot download its own browsers here: Debian's ``chromium`` (installed by
.ci/setup) is launched with ``executable_path`` and the flags of FACTS.md ("Browser tests").

Screenshots are kept as test artifacts in ``test-artifacts/`` at the repository root
(git-ignored; ``MPC_TEST_ARTIFACTS`` chooses another directory): ``browser-06-ENGINE.png``
after the run, ``browser-06-ENGINE-failed.png`` when the test fails midway.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Containers, required_env

from mpcontainer_magics.engines.base import LABEL_PID
from mpcontainer_magics.platforms import Platform

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "notebooks" / "06-widget-app.ipynb"
CHROMIUM = "/usr/bin/chromium"
# FACTS.md, "Browser tests": without the background-networking flags Chromium floods the
# closed network with refused connections. (Playwright adds --headless and --no-sandbox.)
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PLATFORMS = ["linux/amd64", "linux/arm64", "linux/arm/v7", "linux/s390x", "linux/ppc64le"]
# JupyterLab settings: render every cell (no virtual scrolling) and show no news toasts.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
        "doNotDisturbMode": True,
    },
}
RUN_ALL_TIMEOUT_MS = 300_000
#: For a result table: how many lines of text each row's stdout cell shows (the distinct
#: tops of the boxes its text is laid out in).
LINES_PER_STDOUT_CELL = """table => {
    const column = [...table.querySelectorAll("thead th")]
        .findIndex(th => th.textContent.trim() === "stdout");
    return [...table.querySelectorAll("tbody tr")].map(row => {
        const text = document.createRange();
        text.selectNodeContents(row.cells[column]);
        return new Set([...text.getClientRects()].map(box => Math.round(box.top))).size;
    });
}"""


def missing(what: str) -> None:
    """A missing part fails under CI (CI=true) and skips elsewhere, as in conftest."""
    message = f"{what}: run the suite with `bash .ci/test` (.ci/setup installs it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def artifacts_dir() -> Path:
    path = Path(os.environ.get("MPC_TEST_ARTIFACTS") or REPO / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Lab:
    """A JupyterLab server on 127.0.0.1 serving ``root``."""

    def __init__(self, root: Path, home: Path, env: dict[str, str]) -> None:
        self.root = root
        self.port = free_port()
        self.token = secrets.token_hex(16)
        settings = home / "lab-settings"
        for name, values in LAB_SETTINGS.items():
            (settings / name).parent.mkdir(parents=True, exist_ok=True)
            (settings / name).write_text(json.dumps(values))
        env = {
            **env,
            # The venv's python3 kernelspec, and nothing of the user's Jupyter set-up.
            "JUPYTER_PATH": str(Path(sys.prefix) / "share" / "jupyter"),
            "JUPYTER_CONFIG_DIR": str(home / "config"),
            "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
            "JUPYTERLAB_SETTINGS_DIR": str(settings),
            "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        }
        self.log = (home / "jupyterlab.log").open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyterlab",
                "--no-browser",
                "--allow-root",
                "--ServerApp.ip=127.0.0.1",
                f"--ServerApp.port={self.port}",
                "--ServerApp.port_retries=0",
                f"--IdentityProvider.token={self.token}",
                f"--ServerApp.root_dir={root}",
                "--LabApp.news_url=None",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            ],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=root,
        )
        self._wait_until_up()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str, method: str = "GET") -> Any:
        request = urllib.request.Request(
            f"{self.base}{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"JupyterLab exited; see {self.log.name}")
            try:
                self.api("/api/status")
                return
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"JupyterLab did not answer in 60 s; see {self.log.name}")

    def wait_for_kernel(self, timeout: float = 120) -> None:
        """Until the page's kernel has started and the page is connected to it (cells run
        before that are not sent to the kernel)."""
        deadline = time.monotonic() + timeout
        while True:
            kernels = self.api("/api/kernels")
            if any(k["execution_state"] == "idle" and k["connections"] > 0 for k in kernels):
                return
            assert time.monotonic() < deadline, f"no connected idle kernel: {kernels}"
            time.sleep(0.2)

    def kernel_pids(self) -> list[int]:
        """The kernels this server started (its ipykernel child processes)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                status = (entry / "status").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            parent = re.search(r"^PPid:\s+(\d+)", status, re.M)
            if parent and int(parent.group(1)) == self.process.pid and b"ipykernel" in cmdline:
                pids.append(int(entry.name))
        return pids

    def shutdown_kernels(self) -> None:
        """Shut every kernel down as the UI does (the kernel's atexit removes containers)."""
        pids = self.kernel_pids()
        for kernel in self.api("/api/kernels"):
            self.api(f"/api/kernels/{kernel['id']}", method="DELETE")
        deadline = time.monotonic() + 30
        while any(Path(f"/proc/{pid}").exists() for pid in pids):
            assert time.monotonic() < deadline, "the kernel did not exit"
            time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture
def lab(
    tmp_path: Path, engine_kind: str, monkeypatch: pytest.MonkeyPatch, blob_cache: Path
) -> Iterator[Lab]:
    """JupyterLab serving a copy of notebook 06, its kernels on the engine under test (the
    kernel inherits MPC_ENGINE and MPC_CACHE_DIR: the ``containers`` fixture sees its work)."""
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        missing("jupyterlab is not installed in this Python")
    monkeypatch.setenv("MPC_DEMO_IMAGE", required_env("MPC_TEST_IMAGE"))
    monkeypatch.setenv("MPC_REGISTRY", required_env("MPC_TEST_REGISTRY"))
    root = tmp_path / "lab"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    server = Lab(root, tmp_path, dict(os.environ))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[Any]:
    """A page of headless Debian Chromium with a new, empty profile."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("the playwright package is not installed in this Python")
    if not os.access(CHROMIUM, os.X_OK):
        missing(f"{CHROMIUM} is missing (Debian package chromium)")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


def test_widget_app_runs_in_jupyterlab(
    lab: Lab, browser_page: Any, containers: Containers, engine_kind: str
) -> None:
    from playwright.sync_api import expect

    page = browser_page
    page.set_default_timeout(60_000)
    shot = artifacts_dir() / f"browser-06-{engine_kind}.png"
    try:
        page.goto(f"{lab.base}/lab/tree/{NOTEBOOK.name}?token={lab.token}")
        expect(page.locator(".jp-NotebookPanel")).to_be_visible(timeout=120_000)
        lab.wait_for_kernel()

        # Run ▸ Run All Cells, from the menu bar, as a reader would.
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        # The last code cell prints the published reference once every cell has run.
        registry = re.escape(required_env("MPC_TEST_REGISTRY"))
        expect(
            page.locator(".jp-OutputArea-output")
            .filter(has_text=re.compile(rf"{registry}/mpc-widget-demo-\w+@sha256:[0-9a-f]{{64}}"))
            .first
        ).to_be_visible(timeout=RUN_ALL_TIMEOUT_MS)
        assert (
            page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
            .filter(has_text="Traceback")
            .count()
            == 0
        )

        # The widget rendered; type a new command and click its Run button.
        app = page.locator(".mpc-app")
        expect(app).to_have_count(1)
        expect(app.locator(".widget-button", has_text=re.compile(r"^\s*Run\s*$"))).to_be_enabled()
        command = app.locator(".widget-textarea textarea")
        command.fill('echo "browser run on $(uname -m)"')
        command.blur()
        app.locator(".widget-button", has_text=re.compile(r"^\s*Run\s*$")).click()

        # Each platform's own column shows its line, streamed from the kernel's thread ...
        for name in PLATFORMS:
            machine = Platform.parse(name).uname_machine
            card = app.locator(".mpc-platform-card").filter(has_text=f"{name} (")
            expect(card).to_have_count(1)
            expect(card.locator(".mpc-platform-output")).to_contain_text(
                f"browser run on {machine}", timeout=120_000
            )
        # ... and the result table has a row per platform with what it printed.
        table = app.locator(".mpc-result table").filter(has_text="browser run on")
        expect(table).to_have_count(1, timeout=120_000)
        for name in PLATFORMS:
            machine = Platform.parse(name).uname_machine
            expect(table.locator("tr", has_text=name)).to_contain_text(f"browser run on {machine}")
        expect(app.locator(".mpc-status")).to_contain_text("done in")
        # Readable at five platforms: each one-line output takes one line on the page.
        assert table.evaluate(LINES_PER_STDOUT_CELL) == [1] * len(PLATFORMS)

        app.locator(".widget-gridbox").scroll_into_view_if_needed()
        page.screenshot(path=str(shot))
        print(f"screenshot: {shot}")
    except BaseException:
        failed = shot.with_name(f"{shot.stem}-failed.png")
        page.screenshot(path=str(failed), full_page=True)
        print(f"screenshot of the failure: {failed}; JupyterLab log: {lab.log.name}")
        raise

    # Closing the kernel removes the app's session containers.
    kernels = lab.kernel_pids()
    assert len(kernels) == 1
    assert len(containers.managed(**{LABEL_PID: str(kernels[0])})) == len(PLATFORMS)
    lab.shutdown_kernels()
    assert containers.managed(**{LABEL_PID: str(kernels[0])}) == []
