"""The widget app (``mpc.ui()``), driven as a user would, without a browser: type an image,
tick platforms, click Run / Stop / Publish with ``button.click()``, read what each platform's
Output widget and the table hold. On both real engines (the ``engine_kind`` fixture), with
the leak check of conftest (``no_leaks``).

The browser itself is tested in test_browser.py.
"""

from __future__ import annotations

import concurrent.futures
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import FIVE_PLATFORMS, Containers

import mpcontainer_magics as mpc
from mpcontainer_magics.engines.base import LABEL_SESSION
from mpcontainer_magics.platforms import host_platform
from mpcontainer_magics.widget_parts import byte_label
from mpcontainer_magics.widgets import ContainerApp

MACHINES = {
    "linux/amd64": "x86_64",
    "linux/arm64": "aarch64",
    "linux/s390x": "s390x",
    "linux/ppc64le": "ppc64le",
    "linux/arm/v7": "armv7l",
}
RUN_TIMEOUT = 180


def text_of(output: Any, stream: str = "stdout") -> str:
    """What an Output widget holds of one stream."""
    return "".join(
        o["text"] for o in output.outputs if o["output_type"] == "stream" and o["name"] == stream
    )


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def make_app(engine_kind: str, no_leaks: None) -> Iterator[Callable[..., ContainerApp]]:
    """Apps on the engine under test; closed (containers removed) before the leak check."""
    apps: list[ContainerApp] = []

    def make(image: str | None = None, **options: Any) -> ContainerApp:
        app = mpc.ui(image, engine=engine_kind, **options)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


def tick(app: ContainerApp, platforms: str) -> None:
    wanted = platforms.split(",")
    for name, box in app.platform_boxes.items():
        box.value = name in wanted and not box.disabled


def test_picker_shows_what_the_image_offers(
    make_app: Callable[..., ContainerApp], test_image: str, engine_kind: str
) -> None:
    app = make_app()
    assert all(box.disabled for box in app.platform_boxes.values()), "nothing known yet"
    app.image_box.value = test_image  # what Enter (or leaving the box) does in the browser
    report = app.lookup().wait(60)
    assert report.engine == engine_kind
    native = str(host_platform())
    for name in FIVE_PLATFORMS.split(","):
        box = app.platform_boxes[name]
        how = "native" if name == native else "emulated"
        assert box.description == f"{name} ({how})"
        assert not box.disabled and box.value, f"{name} should be offered and ticked"
    for name in ("linux/386", "linux/riscv64"):  # common, but the image lacks them
        box = app.platform_boxes[name]
        assert box.disabled and not box.value
        assert box.description == f"{name} (not in image)"
    assert [str(p) for p in app.selected_platforms] == [
        n for n in app.platform_boxes if n in FIVE_PLATFORMS.split(",")
    ]
    assert "5 platforms offered, 5 can run" in app.status.value


def test_picker_greys_out_platforms_a_single_platform_image_lacks(
    make_app: Callable[..., ContainerApp], amd64_only_image: str
) -> None:
    app = make_app(amd64_only_image)  # a preset image is looked up at once
    app.lookup().wait(60)
    enabled = [name for name, box in app.platform_boxes.items() if not box.disabled]
    assert enabled == ["linux/amd64"]
    assert app.platform_boxes["linux/arm64"].description == "linux/arm64 (not in image)"


def test_unknown_image_is_reported_in_the_status(
    make_app: Callable[..., ContainerApp], registry_host: str
) -> None:
    app = make_app(f"{registry_host}/mpc/no-such-image:1")
    with pytest.raises(mpc.MPCError):
        app.lookup().wait(60)
    assert "color:#b00" in app.status.value and "no-such-image" in app.status.value
    assert not app.selected_platforms
    app.run_button.click()
    with pytest.raises(mpc.MPCError):
        app.wait(60)
    assert not app.busy and not app.run_button.disabled


def test_run_streams_each_platform_and_shows_the_table(
    make_app: Callable[..., ContainerApp], test_image: str, containers: Containers
) -> None:
    app = make_app(test_image, command="uname -m\necho to-stderr >&2")
    app.lookup().wait(60)
    started = time.monotonic()
    app.run_button.click()
    assert time.monotonic() - started < 0.5, "the click must only start the run"
    assert app.busy and app.run_button.disabled and not app.stop_button.disabled
    result = app.wait(RUN_TIMEOUT)

    assert isinstance(result, mpc.RunResult) and result.ok
    assert sorted(result.platform_names) == sorted(FIVE_PLATFORMS.split(","))
    for name, machine in MACHINES.items():
        card = app.cards[name]
        assert text_of(card.output) == f"{machine}\n", name
        assert text_of(card.output, "stderr") == "to-stderr\n", name
        assert card.pull_bar.value == card.pull_bar.max and card.pull_bar.bar_style == "success"
        assert ("native" if result[name].emulated is False else "emulated") in card.header.value
    assert [c.platform for c in app.columns.children] == [r.platform for r in result]

    # The result, displayed as by display(): the rich table and the plain text.
    (shown,) = app.table.outputs
    assert shown["output_type"] == "display_data"
    assert "<table" in shown["data"]["text/html"]
    for machine in MACHINES.values():
        assert machine in shown["data"]["text/html"]
        assert machine in shown["data"]["text/plain"]
    assert re.search(r"done in [\d.]+ s on 5 platforms", app.status.value)
    assert not app.busy and not app.run_button.disabled and app.stop_button.disabled
    assert not app.publish_button.disabled

    # The run happened in the app's session: one live container per platform until close().
    assert len(containers.mine(**{LABEL_SESSION: app.session_name})) == 5
    app.close()
    assert containers.mine() == []


def test_done_in_is_the_time_the_user_waited_pulls_and_session_start_included(
    make_app: Callable[..., ContainerApp], test_image: str
) -> None:
    app = make_app(test_image)
    app.lookup().wait(60)
    clicked = time.monotonic()
    app.run_button.click()
    result = app.wait(RUN_TIMEOUT)
    waited = time.monotonic() - clicked
    # The first run pulls five platforms and starts their session: much more than its commands.
    assert waited > result.wall_s + 0.5
    done = re.search(r"done in ([\d.]+) s on 5 platforms", app.status.value)
    assert done is not None, app.status.value
    assert waited - 0.3 <= float(done.group(1)) <= waited + 0.05


def test_pull_bars_count_each_platforms_bytes(
    make_app: Callable[..., ContainerApp], test_image: str
) -> None:
    app = make_app(test_image, command="true", platforms="linux/amd64,linux/s390x")
    app.lookup().wait(60)
    seen: dict[str, list[tuple[int, int]]] = {}
    app.run_button.click()
    deadline = time.monotonic() + RUN_TIMEOUT
    while app.busy and time.monotonic() < deadline:  # what a browser shows meanwhile
        for name, card in list(app.cards.items()):
            seen.setdefault(name, []).append((card.pull_bar.value, card.pull_bar.max))
        time.sleep(0.005)
    assert app.wait(RUN_TIMEOUT).ok
    for name in ("linux/amd64", "linux/s390x"):
        card = app.cards[name]
        assert card.pull_bar.max > 1, "the bar's maximum is the image's size in bytes"
        assert card.pull_bar.value == card.pull_bar.max and card.pull_bar.bar_style == "success"
        shown = re.fullmatch(r"([\d.]+)/([\d.]+) (B|kB|MB|GB)", card.pull_bytes.value)
        assert shown and shown[1] == shown[2], card.pull_bytes.value
        assert card.pull_bytes.value == byte_label(card.pull_bar.max, card.pull_bar.max)
        values = [v for v, m in seen.get(name, []) if m == card.pull_bar.max]
        assert values == sorted(values), "the bar only moves forward"
    assert app.cards["linux/amd64"].pull_bar.max != app.cards["linux/s390x"].pull_bar.max


def click_run_until_all_started(app: ContainerApp) -> None:
    app.run_button.click()
    wait_until(
        lambda: (
            len(app.cards) == 5
            and all(text_of(c.output) == "started\n" for c in app.cards.values())
        ),
        RUN_TIMEOUT,
        "every platform to start its command",
    )


def test_stop_cancels_a_run_on_five_platforms(
    make_app: Callable[..., ContainerApp], test_image: str, containers: Containers
) -> None:
    app = make_app(test_image, command="echo started\nsleep 30\necho not-stopped")
    app.lookup().wait(60)
    assert len(app.selected_platforms) == 5
    click_run_until_all_started(app)
    assert app.busy
    clicked = time.monotonic()
    app.stop_button.click()
    assert time.monotonic() - clicked < 0.5, "Stop must return at once"
    with pytest.raises(concurrent.futures.CancelledError):
        app.wait(10)
    took = time.monotonic() - clicked
    assert took < 5, f"Stop took {took:.1f} s"
    assert app.job is not None and app.job.cancelled()
    assert "stopped" in app.status.value
    assert not app.busy and not app.run_button.disabled
    assert all("not-stopped" not in text_of(c.output) for c in app.cards.values())

    # Only the session's containers remain, idle, until the app is closed.
    assert {c["Labels"].get(LABEL_SESSION) for c in containers.mine()} == {app.session_name}
    app.close()
    assert containers.mine() == []


def test_the_session_runs_again_after_stop(
    make_app: Callable[..., ContainerApp], test_image: str
) -> None:
    app = make_app(test_image, command="echo started\nsleep 30")
    app.lookup().wait(60)
    click_run_until_all_started(app)
    app.stop_button.click()
    with pytest.raises(concurrent.futures.CancelledError):
        app.wait(10)
    app.command_box.value = "echo again"
    app.run_button.click()
    result = app.wait(60)
    assert set(result.stdout.values()) == {"again\n"}
    assert all(text_of(c.output) == "again\n" for c in app.cards.values())


def test_first_line_reaches_the_output_within_200_ms(
    make_app: Callable[..., ContainerApp], test_image: str
) -> None:
    """A platform's first line is in its Output < 0.2 s after the container wrote it.

    The container prints the kernel's boot-time clock (/proc/uptime, 10 ms steps, shared
    with the host and with QEMU guests); the test stamps the same clock when the Output
    widget changes (by then its comm message has been sent).
    """
    native, emulated = str(host_platform()), "linux/arm64"
    app = make_app(test_image, command="cat /proc/uptime\nsleep 1\necho end")
    app.lookup().wait(60)
    tick(app, f"{native},{emulated}")
    # Warm up (pull, start the session), so that the measured run is the steady state.
    app.run_button.click()
    app.wait(RUN_TIMEOUT)

    seen: dict[str, float] = {}

    def stamp(name: str) -> Callable[[Any], None]:
        def changed(change: Any) -> None:
            if change["new"] and name not in seen:
                seen[name] = time.clock_gettime(time.CLOCK_BOOTTIME)

        return changed

    for name in (native, emulated):
        app.cards[name].output.observe(stamp(name), names="outputs")
    app.run_button.click()
    result = app.wait(RUN_TIMEOUT)
    for name in (native, emulated):
        written = float(result[name].stdout.split()[0])
        latency = seen[name] - written
        assert latency < 0.5, f"{name}: first line took {latency:.3f} s to reach its Output"
        assert seen[name] < written + 0.9, "it must arrive while the command still runs"


def test_publish_sends_the_last_runs_platforms(
    make_app: Callable[..., ContainerApp], test_image: str, registry_host: str
) -> None:
    app = make_app(test_image, command="echo built > /built.txt\nuname -m")
    app.lookup().wait(60)
    tick(app, "linux/amd64,linux/s390x")
    app.publish_button.click()  # no reference yet: refused, says why
    assert app.job is None and "enter a reference" in app.status.value
    reference = f"{registry_host}/mpc-widget-{int(time.time() * 1000)}:1"
    app.publish_ref.value = reference
    app.publish_button.click()  # nothing ran yet: refused too
    assert app.job is None and "run a command first" in app.status.value
    app.run_button.click()
    app.wait(RUN_TIMEOUT)

    app.publish_button.click()
    published = app.wait(RUN_TIMEOUT)
    assert isinstance(published, mpc.Published)
    assert sorted(str(v.platform) for v in published.variants) == ["linux/amd64", "linux/s390x"]
    assert re.fullmatch(
        rf"{re.escape(reference.rsplit(':', 1)[0])}@sha256:[0-9a-f]{{64}}", published.reference
    )
    assert published.reference in text_of(app.publish_output)
    assert "published 2 platforms" in app.status.value


def test_the_magic_opens_the_app_on_its_own_client(shell: Any, test_image: str) -> None:
    app = shell.run_line_magic("container", f"ui {test_image}")
    try:
        assert isinstance(app, ContainerApp)
        app.lookup().wait(60)
        ticked = sorted(p for p, box in app.platform_boxes.items() if box.value)
        assert ticked == sorted(FIVE_PLATFORMS.split(","))
        app.command_box.value = "uname -m"
        app.run_button.click()
        app.wait(120)
        # The app ran in a session of the magics' own client: %container sees it.
        sessions = shell.run_line_magic("container", "sessions")
        assert set(sessions["name"]) == {app.session_name}
    finally:
        app.close()
