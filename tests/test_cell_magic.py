"""``%%container`` on the real Docker engine, driven through a real InteractiveShell."""

from __future__ import annotations

import contextlib
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import FIVE_PLATFORMS, StampedOutput
from IPython.core.error import UsageError

BYTE_ORDER = "printf '\\001\\002\\003\\004' | od -An -tx4"


def run(shell: Any, line: str, cell: str) -> Any:
    return shell.run_cell_magic("container", line, cell)


def test_each_platform_reports_its_own_machine(shell, engine_kind):
    run(shell, f"--platform {FIVE_PLATFORMS} --out res", "uname -m")
    res = shell.user_ns["res"]
    assert {r.platform.uname_machine: r.stdout.strip() for r in res} == {
        "x86_64": "x86_64",
        "aarch64": "aarch64",
        "s390x": "s390x",
        "ppc64le": "ppc64le",
        "armv7l": "armv7l",
    }
    assert [r.emulated for r in res] == [False, True, True, True, True]
    assert all(r.engine == engine_kind and r.exit_code == 0 for r in res)
    # Each row names the manifest actually run: one distinct digest per platform.
    assert len({r.image_digest for r in res}) == 5
    assert all(r.image_digest.startswith("sha256:") for r in res)


def test_byte_order_differs_on_s390x(shell, capsys):
    run(
        shell, "--platform linux/amd64,linux/arm64,linux/s390x --out res", f"uname -m\n{BYTE_ORDER}"
    )
    res = shell.user_ns["res"]
    assert res["linux/amd64"].stdout.split()[1] == "04030201"
    assert res["linux/arm64"].stdout.split()[1] == "04030201"
    assert res["linux/s390x"].stdout.split()[1] == "01020304"
    assert "'04030201' on linux/amd64, linux/arm64; '01020304' on linux/s390x" in res.summary()

    frame = res.to_frame()
    assert list(frame["platform"]) == ["linux/amd64", "linux/arm64", "linux/s390x"]
    for column in ("exit_code", "stdout", "stderr", "duration_s", "emulated", "image_digest"):
        assert column in frame.columns
    shown = capsys.readouterr().out
    assert "[linux/s390x] s390x" in shown  # streamed, labelled lines
    assert "linux/s390x" in shown and "differs" in shown  # the displayed table + summary


def test_platforms_run_in_parallel(shell):
    run(shell, "--platform linux/amd64,linux/arm64,linux/s390x --out res", "sleep 3")
    res = shell.user_ns["res"]
    assert all(r.duration_s >= 3 for r in res)
    # One after another would take at least 9 s.
    assert res.wall_s < 6, f"3 platforms of 3 s took {res.wall_s:.1f} s: not concurrent"


def test_output_streams_while_the_command_still_runs(shell):
    out = StampedOutput()
    with contextlib.redirect_stdout(out):
        run(shell, "--platform linux/amd64,linux/arm64", "echo first; sleep 3; echo second")
        finished = time.monotonic()
    first = min(t for t, text in out.stamps if "first" in text)
    assert finished - first >= 2.5, "output arrived only when the command ended"
    assert "[linux/arm64] first" in out.getvalue()


def test_single_platform_shows_output_without_table(shell, capsys):
    run(shell, "--platform linux/s390x", "uname -m")
    out = capsys.readouterr().out
    assert out == "s390x\n"
    run(shell, "--platform linux/s390x --table", "uname -m")
    assert "image_digest" in capsys.readouterr().out


def test_default_platform_is_the_engines_native_one(shell):
    run(shell, "--out res", "uname -m")
    (only,) = shell.user_ns["res"]
    assert str(only.platform) == "linux/amd64" and not only.emulated


def test_all_means_every_platform_the_image_offers(shell):
    run(shell, "--platform all --out res", "true")
    assert shell.user_ns["res"].platform_names == FIVE_PLATFORMS.split(",")


def test_env_and_workdir(shell):
    run(
        shell,
        "--platform linux/arm64 -e GREETING=hello -e 'SPACED=a b' --workdir /tmp --out res",
        'echo "$GREETING $SPACED"; pwd',
    )
    assert shell.user_ns["res"][0].stdout == "hello a b\n/tmp\n"


def test_nonzero_exit_is_data_unless_asked(shell, capsys):
    run(shell, "--platform linux/amd64,linux/s390x --out res", "echo oops >&2; exit 3")
    res = shell.user_ns["res"]
    assert [r.exit_code for r in res] == [3, 3]
    assert res["linux/s390x"].stderr == "oops\n"
    assert "[linux/s390x] oops" in capsys.readouterr().err

    with pytest.raises(UsageError, match="exited non-zero: 3 on linux/amd64, 3 on linux/s390x"):
        run(shell, "--platform linux/amd64,linux/s390x --raise-error", "exit 3")


def test_multibyte_output_survives(shell):
    run(shell, "--platform linux/arm64 --out res", "printf 'gr\\303\\274n \\342\\202\\254\\n'")
    assert shell.user_ns["res"][0].stdout == "grün €\n"


# -- errors: one line, what went wrong, how to fix it; nothing lost, nothing leaked --------


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_unknown_platform_suggests_the_right_one(shell):
    with pytest.raises(UsageError) as exc:
        run(shell, "--platform linux/amd64,linux/arm65", "true")
    assert "did you mean linux/arm64?" in one_line(exc)


def test_image_lacking_the_platform_lists_what_it_offers(shell, amd64_only_image):
    with pytest.raises(UsageError) as exc:
        run(shell, f"--image {amd64_only_image} --platform linux/amd64,linux/s390x", "true")
    assert f"{amd64_only_image} has no variant for linux/s390x; it offers: linux/amd64" in one_line(
        exc
    )


def test_missing_image(shell, registry_host):
    with pytest.raises(UsageError) as exc:
        run(shell, f"--image {registry_host}/mpc/nope:1", "true")
    assert "not found" in one_line(exc) and "mpc/nope" in one_line(exc)


def test_unreachable_registry(shell):
    with pytest.raises(UsageError) as exc:
        run(shell, "--image 127.0.0.1:1/mpc/busybox:1", "true")
    assert "cannot reach registry 127.0.0.1:1" in one_line(exc)


def test_unreachable_engine_says_how_to_start_it(ip, test_image, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    monkeypatch.setenv("MPC_ENGINE", "docker")  # "auto" would fall back to the embedded engine
    ip.run_line_magic("load_ext", "mpcontainer_magics")
    try:
        with pytest.raises(UsageError) as exc:
            run(ip, f"--image {test_image}", "true")
    finally:
        ip.run_line_magic("unload_ext", "mpcontainer_magics")
    text = one_line(exc)
    assert "cannot reach the Docker engine at unix:///nonexistent/docker.sock" in text
    assert "DOCKER_HOST" in text and "dockerd" in text


def test_missing_emulation_is_translated_and_other_platforms_kept(
    shell, engine_kind, tmp_path, monkeypatch
):
    # As on a machine without emulation for ppc64le: Docker's binfmt handler disabled, or
    # (embedded engine) no qemu-ppc64le on PATH.
    handler = Path("/proc/sys/fs/binfmt_misc/qemu-ppc64le")
    if not handler.exists():
        pytest.fail("the qemu-ppc64le binfmt handler should be registered by .ci/setup")
    only_proot = tmp_path / "bin"
    only_proot.mkdir()
    (only_proot / "proot").symlink_to(shutil.which("proot"))
    if engine_kind == "docker":
        handler.write_text("0")
    else:
        monkeypatch.setenv("PATH", str(only_proot))
    try:
        with pytest.raises(UsageError) as exc:
            run(shell, "--platform linux/amd64,linux/ppc64le --out res", "uname -m")
    finally:
        handler.write_text("1")
    text = one_line(exc)
    assert "linux/ppc64le cannot run on this engine" in text
    if engine_kind == "docker":
        assert "tonistiigi/binfmt --install all" in text
    else:
        assert "no qemu-ppc64le-static on PATH" in text
    assert "qemu-user-static" in text
    res = shell.user_ns["res"]
    assert res["linux/amd64"].stdout == "x86_64\n"
    assert res["linux/ppc64le"].exit_code is None and "QEMU" in res["linux/ppc64le"].error


def test_timeout_keeps_the_platforms_that_finished(shell):
    slow_on_s390x = 'if [ "$(uname -m)" = s390x ]; then sleep 60; fi; echo done'
    started = time.monotonic()
    with pytest.raises(UsageError) as exc:
        run(shell, "--platform linux/amd64,linux/s390x --timeout 2 --out res", slow_on_s390x)
    assert time.monotonic() - started < 20
    text = one_line(exc)
    assert "linux/s390x did not finish within the 2 s limit" in text
    assert "results of linux/amd64 are kept" in text
    res = shell.user_ns["res"]
    assert res["linux/amd64"].stdout == "done\n" and res["linux/amd64"].exit_code == 0
    assert res["linux/s390x"].timed_out


@pytest.mark.parametrize(
    ("line", "cell", "message"),
    [
        ("--bogus", "true", "unrecognized arguments: --bogus"),
        (
            "--env NOVALUE",
            "true",
            "--env expects KEY=VALUE, got 'NOVALUE'; write it as --env NOVALUE=VALUE",
        ),
        ("--env =x", "true", "got '=x'; write it as --env NAME=x"),
        (
            "--timeout 0",
            "true",
            "timeout must be a positive number of seconds, not 0.0; give e.g. 60",
        ),
        ("--timeout soon", "true", "invalid float value: 'soon'"),
        ("--platform all,linux/arm64", "true", "all"),
        ("", "   \n", "the cell is empty"),
    ],
)
def test_bad_flags(shell, line, cell, message):
    with pytest.raises(UsageError) as exc:
        run(shell, line, cell)
    assert message in one_line(exc)


def test_user_sees_one_line_not_a_traceback(shell, capsys):
    outcome = shell.run_cell("%%container --platform linux/arm65\ntrue\n")
    assert isinstance(outcome.error_in_exec, UsageError)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().startswith("UsageError:") and len(err.strip().splitlines()) == 1


def test_ctrl_c_stops_and_removes_the_cells_containers(shell, containers):
    main = threading.main_thread().ident
    assert main == threading.get_ident()

    interrupted = []

    def interrupt_once_running() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            running = [c for c in containers.mine() if c["State"] == "running"]
            if len(running) == 2:
                interrupted.append(time.monotonic())
                signal.pthread_kill(main, signal.SIGINT)
                return
            time.sleep(0.05)

    threading.Thread(target=interrupt_once_running, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        run(shell, "--platform linux/amd64,linux/arm64", "sleep 120")
    # Stopped soon after Ctrl-C (the start-up before it may be slow on a busy machine).
    assert time.monotonic() - interrupted[0] < 30
    assert containers.mine() == []
    # The extension still works after an interrupt.
    run(shell, "--platform linux/arm64 --out res", "echo alive")
    assert shell.user_ns["res"][0].stdout == "alive\n"


def test_help_documents_the_options(shell):
    doc = shell.find_cell_magic("container").__doc__
    for option in ("--platform", "--image", "--env", "--workdir", "--timeout", "--out"):
        assert option in doc
    assert "%container pull" in doc and "%container platforms" in doc


def test_default_image_is_configurable(shell, amd64_only_image):
    shell.run_line_magic("config", f"ContainerMagics.default_image = {amd64_only_image!r}")
    with pytest.raises(UsageError, match="busybox-amd64only:1 has no variant for linux/arm64"):
        run(shell, "--platform linux/arm64", "true")
