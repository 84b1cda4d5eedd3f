"""``%container doctor`` and ``await client.doctor()`` against the real engines."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from auth_fixtures import b64
from conftest import FIVE_PLATFORMS
from IPython.core.error import UsageError

import mpcontainer_magics as mpc
from mpcontainer_magics.doctor import (
    DoctorReport,
    Problem,
    check_binfmt,
    diagnose,
    directory_size,
    format_size,
)
from mpcontainer_magics.platforms import Platform

PPC64LE_HANDLER = Path("/proc/sys/fs/binfmt_misc/qemu-ppc64le")
AMD64 = Platform.parse("linux/amd64")


def doctor() -> DoctorReport:
    async def ask() -> DoctorReport:
        async with mpc.connect() as client:  # "auto" = the engine_kind under test
            return await client.doctor()

    return asyncio.run(ask())


def one_line(exc: pytest.ExceptionInfo[UsageError]) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_report_names_engine_version_platforms_and_cache(engine_kind, blob_cache, tmp_path):
    # The cache (the test's MPC_CACHE_DIR): hard links count once, symlinks are not followed.
    (blob_cache / "blobs").mkdir()
    (blob_cache / "blobs" / "a").write_bytes(b"x" * 12345)
    os.link(blob_cache / "blobs" / "a", blob_cache / "blobs" / "a-link")
    (tmp_path / "big").write_bytes(b"y" * 100_000)
    (blob_cache / "outside").symlink_to(tmp_path / "big")
    (blob_cache / "outside-dir").symlink_to(tmp_path)
    link_size = len(os.fsencode(tmp_path / "big")) + len(os.fsencode(tmp_path))

    report = doctor()

    assert report.engine == engine_kind
    assert report.chosen == ""  # MPC_ENGINE asked for it: "auto" chose nothing
    if engine_kind == "docker":
        info = json.loads(
            subprocess.run(
                ["docker", "version", "--format", "{{json .Server}}"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        assert report.version == f"Docker {info['Version']} (API {info['ApiVersion']})"
    else:
        banner = subprocess.run(["proot", "--version"], capture_output=True, text=True).stdout
        version = re.search(r"\d+\.\d+\.\d+", banner)
        assert version is not None
        assert report.version == f"proot {version.group()} at {shutil.which('proot')}"
    assert report.native == AMD64
    runs = {str(c.platform): c.runs for c in report.platforms}
    assert runs["linux/amd64"] == "native"
    assert all(runs[p] == "emulated" for p in FIVE_PLATFORMS.split(",")[1:])
    assert report.ok and report.problems == ()
    assert report.cache_dir == str(blob_cache)
    assert report.cache_bytes == 12345 + link_size

    frame = report.to_frame()
    assert list(frame.columns) == ["platform", "runs", "detail", "problem", "fix"]
    assert list(frame["platform"][:2]) == ["linux/amd64", "linux/arm64"]
    detail = dict(zip(frame["platform"], frame["detail"], strict=True))
    if engine_kind == "docker":
        assert detail["linux/s390x"] == "binfmt handler qemu-s390x: enabled, flags PF"
    else:
        assert detail["linux/s390x"] == f"proot -q {shutil.which('qemu-s390x-static')}"

    text = repr(report)
    assert f"engine: {engine_kind} ({report.version})" in text
    assert "native platform: linux/amd64" in text
    assert f"cache: {blob_cache}, {format_size(report.cache_bytes)}" in text
    assert format_size(12345) == "12.1 KiB" and format_size(999) == "999 B"
    assert "problems: none" in text
    page = report._repr_html_()
    assert "no problems found" in page and "linux/ppc64le" in page
    assert "#1a7f37" in page  # "emulated" in green


def test_missing_emulation_is_a_problem_with_its_fix(shell, engine_kind, tmp_path, monkeypatch):
    # Docker: the ppc64le handler disabled; embedded: a PATH holding proot and no qemu.
    if not PPC64LE_HANDLER.exists():
        pytest.fail("the qemu-ppc64le binfmt handler should be registered by .ci/setup")
    only_proot = tmp_path / "bin"
    only_proot.mkdir()
    (only_proot / "proot").symlink_to(shutil.which("proot"))
    if engine_kind == "docker":
        PPC64LE_HANDLER.write_text("0")
    else:
        monkeypatch.setenv("PATH", str(only_proot))
    try:
        report = shell.run_line_magic("container", "doctor")
    finally:
        PPC64LE_HANDLER.write_text("1")
    assert isinstance(report, DoctorReport)
    ppc = next(c for c in report.platforms if str(c.platform) == "linux/ppc64le")
    assert ppc.runs == "no"
    if engine_kind == "docker":
        assert report.problems == (
            Problem(
                "linux/ppc64le: binfmt handler qemu-ppc64le is disabled",
                f"`echo 1 > {PPC64LE_HANDLER}` or `update-binfmts --enable qemu-ppc64le`",
            ),
        )
        assert [c.runs for c in report.platforms if c.platform.architecture == "s390x"] == [
            "emulated"
        ]
    else:
        assert ppc.problem == Problem(
            "linux/ppc64le: qemu-ppc64le-static is not on PATH",
            "`apt-get install qemu-user-static` (or put qemu-ppc64le-static on PATH)",
        )
        # No qemu at all: every foreign platform is a problem, the native one is not.
        assert {str(p.what).split(":")[0] for p in report.problems} == {
            str(c.platform) for c in report.platforms if c.runs == "no"
        }
        assert len(report.problems) == len(report.platforms) - 1
    text = repr(report)
    assert f"problems ({len(report.problems)}):" in text
    assert f"  {ppc.problem}" in text.splitlines()
    page = report._repr_html_()
    assert "— fix: " in page and "qemu-ppc64le" in page
    assert "<code>" in page  # the commands of the fix shown as code


@pytest.mark.parametrize(
    ("entry", "runs", "what", "fix"),
    [
        (
            None,
            "no",
            "no binfmt handler qemu-s390x is registered",
            "tonistiigi/binfmt --install s390x",
        ),
        ("disabled\ninterpreter /q\nflags: F\n", "no", "qemu-s390x is disabled", "echo 1 >"),
        (
            "enabled\ninterpreter /usr/bin/qemu-s390x\nflags: \n",
            "no",
            "registered without the F flag (flags: none), so containers cannot find its "
            "interpreter /usr/bin/qemu-s390x",
            "echo -1 >",
        ),
        ("enabled\ninterpreter /q\nflags: POCF\n", "emulated", None, None),
    ],
)
def test_binfmt_handler_states(tmp_path, entry, runs, what, fix):
    if entry is not None:
        (tmp_path / "qemu-s390x").write_text(entry)
    check = check_binfmt(Platform.parse("linux/s390x"), AMD64, tmp_path)
    assert check.runs == runs
    if what is None:
        assert check.problem is None
    else:
        assert check.problem is not None
        assert check.problem.what.startswith("linux/s390x: ") and what in check.problem.what
        assert fix in check.problem.fix
    assert check_binfmt(Platform.parse("linux/386"), AMD64, tmp_path).runs == "native"


def test_no_credential_ever_shown(engine_kind, tmp_path, monkeypatch):
    password = "pw-do-not-show-7f3a9c"
    config_dir = tmp_path / "docker-config"
    config_dir.mkdir()
    (config_dir / "config.json").write_text(
        json.dumps(
            {
                "auths": {
                    "registry.example.test:5000": {"auth": b64(f"alice-user:{password}")},
                    "https://index.docker.io/v1/": {"auth": b64(f"bob-user:{password}")},
                    "https://quay.example.test/v2/": {
                        "username": "carol-user",
                        "password": password,
                        "identitytoken": password,
                    },
                },
                "credHelpers": {"ghcr.example.test": "secretservice"},
            }
        )
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(config_dir))
    report = doctor()
    assert report.credential_hosts == (
        "registry.example.test:5000",
        "docker.io",
        "quay.example.test",
        "ghcr.example.test (credential helper secretservice)",
    )
    assert report.docker_config == str(config_dir / "config.json")
    shown = repr(report) + report._repr_html_() + report.to_frame().to_string()
    assert "registry.example.test:5000" in shown
    for secret in (password, b64(f"alice-user:{password}"), "alice-user", "bob-user", "carol"):
        assert secret not in shown
    assert report.ok


def test_credential_hosts_never_show_userinfo_in_any_key_form(engine_kind, tmp_path, monkeypatch):
    # Every key form Docker accepts in "auths"; a URL may carry user:password before the host.
    secret = "s3cret-in-a-key-4b1d"
    config_dir = tmp_path / "docker-config"
    config_dir.mkdir()
    auth = {"auth": b64("dave-user:pw")}
    keys = [
        "bare.example.test",
        "port.example.test:5000",
        "http://plain.example.test:5001",
        "https://path.example.test/v1/",
        f"https://dave-user:{secret}@userinfo.example.test:5000/v1/",
        f"http://dave-user:{secret}@plain-userinfo.example.test",
        f"dave-user:{secret}@no-scheme.example.test:5002/v2/",
        f"https://dave-user:{secret}/with/slashes@slash.example.test/v1/",
        "https://[2001:db8::1]:5003/v2/",
        f"dave-user:{secret}",  # no host at all
    ]
    (config_dir / "config.json").write_text(json.dumps({"auths": dict.fromkeys(keys, auth)}))
    monkeypatch.setenv("DOCKER_CONFIG", str(config_dir))

    report = doctor()

    assert report.credential_hosts == (
        "bare.example.test",
        "port.example.test:5000",
        "plain.example.test:5001",
        "path.example.test",
        "userinfo.example.test:5000",
        "plain-userinfo.example.test",
        "no-scheme.example.test:5002",
        "slash.example.test",
        "[2001:db8::1]:5003",
        "(a key that names no registry host)",
    )
    shown = repr(report) + report._repr_html_() + report.to_frame().to_string()
    for hidden in (secret, "dave-user", "with/slashes"):
        assert hidden not in shown


def test_unreadable_docker_config_is_a_problem_not_a_crash(engine_kind, tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text("{not json")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    report = doctor()
    assert report.credential_hosts == ()
    assert [str(p) for p in report.problems] == [
        f"cannot read the Docker config {tmp_path / 'config.json'} (JSONDecodeError) — fix: "
        f"repair or remove {tmp_path / 'config.json'}, then `docker login` again"
    ]


def test_insecure_registries_are_listed(shell, engine_kind):
    shell.run_line_magic(
        "config", "ContainerMagics.insecure_registries = ['reg.example.test:5000']"
    )
    try:
        report = shell.run_line_magic("container", "doctor")
    finally:
        shell.run_line_magic("config", "ContainerMagics.insecure_registries = []")
    assert report.insecure_registries == ("reg.example.test:5000",)
    assert "insecure registries: reg.example.test:5000" in repr(report)


def test_directory_size_of_a_missing_cache_is_none(tmp_path):
    assert directory_size(tmp_path / "absent") is None
    assert directory_size(tmp_path) == 0


def test_magic_errors_are_one_line(shell, engine_kind, monkeypatch):
    with pytest.raises(UsageError) as exc:
        shell.run_line_magic("container", "doctor --bogus")
    assert "unrecognized arguments: --bogus" in one_line(exc)
    if engine_kind == "docker":  # no engine at all: the error says how to start one
        shell.run_line_magic("config", "ContainerMagics.engine = 'docker'")
        monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        try:
            with pytest.raises(UsageError) as exc:
                shell.run_line_magic("container", "doctor")
        finally:
            shell.run_line_magic("config", "ContainerMagics.engine = 'auto'")
        assert "cannot reach the Docker engine at unix:///nonexistent/docker.sock" in one_line(exc)


def test_doctor_is_listed_in_the_help(shell):
    magic: Any = shell.find_line_magic("container")
    assert "%container doctor" in magic.__doc__
    with pytest.raises(UsageError) as exc:
        shell.run_line_magic("container", "nonsense")
    assert "%container doctor" in one_line(exc)


def test_platforms_and_doctor_agree_on_each_handler(tmp_path):
    """`%container platforms` and `%container doctor` read the same handlers the same way:
    a disabled handler and one without the F flag run nothing; 386 needs none on amd64."""
    (tmp_path / "status").write_text("enabled\n")
    handler = "enabled\ninterpreter /usr/libexec/qemu-binfmt/{}-binfmt-P\nflags: {}\n"
    (tmp_path / "qemu-aarch64").write_text(handler.format("aarch64", "PF"))
    (tmp_path / "qemu-s390x").write_text(handler.format("s390x", "PF").replace("en", "dis", 1))
    (tmp_path / "qemu-ppc64le").write_text(handler.format("ppc64le", "P"))

    async def ask() -> tuple[mpc.PlatformReport, DoctorReport]:
        async with mpc.connect("docker") as client:
            engine = client.engine
            emulated = await engine.emulated_platforms(binfmt_dir=tmp_path)
            native = await engine.native_platform()
            report = mpc.PlatformReport("docker", native, tuple(emulated))
            return report, await diagnose(engine, binfmt_dir=tmp_path)

    report, checks = asyncio.run(ask())
    doctor_says = {str(c.platform): c.runs for c in checks.platforms}
    platforms_say = {str(c.platform): report.runnable(c.platform) for c in checks.platforms}
    assert {p: doctor_says[p] for p in ("linux/arm64", "linux/s390x", "linux/ppc64le")} == {
        "linux/arm64": "emulated",
        "linux/s390x": "no",
        "linux/ppc64le": "no",
    }
    assert doctor_says["linux/386"] == platforms_say["linux/386"] == "native"
    for platform, runs in doctor_says.items():
        assert platforms_say[platform] == {"no": "no emulation"}.get(runs, runs), platform


def test_without_binfmt_misc_one_problem_and_no_emulation(tmp_path):
    async def ask() -> tuple[list[Platform], DoctorReport]:
        async with mpc.connect("docker") as client:
            emulated = await client.engine.emulated_platforms(binfmt_dir=tmp_path)
            return emulated, await diagnose(client.engine, binfmt_dir=tmp_path)

    emulated, report = asyncio.run(ask())
    assert [str(p) for p in emulated] == ["linux/386"]  # the amd64 kernel runs it itself
    (problem,) = report.problems
    assert problem.what == f"binfmt_misc is not mounted at {tmp_path}, so no foreign platform runs"
    assert problem.fix.startswith(f"`mount -t binfmt_misc binfmt_misc {tmp_path}`")
    runs = {str(c.platform): c.runs for c in report.platforms}
    assert {p for p, how in runs.items() if how != "no"} == {"linux/amd64", "linux/386"}
