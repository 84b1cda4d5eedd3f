"""``%container`` line magics on the real engine: pull, platforms, cp and export's host side."""

from __future__ import annotations

import pytest
from conftest import assert_says_what_and_how, everything_under
from IPython.core.error import UsageError

from mpcontainer_magics.magics import SUBCOMMANDS, ContainerMagics


def test_platforms_reports_native_emulated_and_offered(shell, amd64_only_image, test_image):
    report = shell.run_line_magic("container", "platforms")
    assert str(report.native) == "linux/amd64"
    emulated = {str(p) for p in report.emulated}
    assert {"linux/arm64", "linux/s390x", "linux/ppc64le", "linux/arm/v7"} <= emulated
    assert "linux/amd64" not in emulated

    report = shell.run_line_magic("container", f"platforms {test_image}")
    assert "offers: linux/amd64 (native), linux/arm64 (emulated)" in str(report)
    assert len(report.offered) == 5

    report = shell.run_line_magic("container", f"platforms {amd64_only_image}")
    assert [str(p) for p in report.offered] == ["linux/amd64"]
    assert report.to_frame().to_dict("records") == [{"platform": "linux/amd64", "runs": "native"}]


def test_pull_pins_each_platform_by_digest(shell, test_image, containers, capsys):
    shell.run_line_magic("container", f"pull {test_image} --platform linux/arm64,linux/s390x")
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[0] for line in lines] == [
        f"{test_image} for linux/arm64",
        f"{test_image} for linux/s390x",
    ]
    digests = [line.split(": ")[1] for line in lines]
    # The engine holds each platform's image under its digest, with the right architecture.
    assert [containers.pulled_architecture(test_image, d) for d in digests] == ["arm64", "s390x"]


def test_runs_after_pulls_never_mix_platforms(shell, test_image):
    # The classic image store re-points the tag on every platform's pull: running by tag
    # afterwards would run the last pulled platform everywhere.
    shell.run_line_magic("container", f"pull {test_image} --platform all")
    shell.run_cell_magic("container", "--platform linux/s390x,linux/amd64 --out res", "uname -m")
    assert shell.user_ns["res"].stdout == {"linux/s390x": "s390x\n", "linux/amd64": "x86_64\n"}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("", "use %%container as a cell magic"),
        ("frobnicate", "unknown subcommand 'frobnicate'"),
        ("pull", "the following arguments are required: image"),
        ("pull alpine --platform linux/arm65", "did you mean linux/arm64?"),
    ],
)
def test_bad_line_magics(shell, line, message):
    with pytest.raises(UsageError) as exc:
        shell.run_line_magic("container", line)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_insecure_registries_follow_the_config(shell):
    shell.run_line_magic("config", "ContainerMagics.insecure_registries = ['Reg.Example:5000']")
    try:
        shell.run_line_magic("container", "platforms")  # connects
        magics = shell.magics_manager.registry["ContainerMagics"]
        assert magics._client.engine.registry.insecure_registries == {"reg.example:5000"}
    finally:
        shell.run_line_magic("config", "ContainerMagics.insecure_registries = []")


def test_cp_and_export_to_an_unwritable_destination_say_why_and_how(
    shell, bad_destinations, tmp_path
):
    shell.run_cell_magic("container", "--session dst", "mkdir -p /out && echo hi > /out/f")
    before = everything_under(tmp_path)
    for why, dest in bad_destinations.items():
        for line in (
            f"cp dst:/out/f {dest}",
            f"cp dst:/out {dest}",
            f"export {dest} --from dst",
            f"export {dest}.tar --from dst",
        ):
            with pytest.raises(UsageError) as exc:
                shell.run_line_magic("container", line)
            assert_says_what_and_how(str(exc.value), why)
    assert everything_under(tmp_path) == before  # no half-written copy, tar or scratch dir
    shell.run_line_magic("container", "stop dst")


# -- the subcommands: declared once, listed in every help -------------------------------------


@pytest.fixture
def loaded(ip):
    """The extension loaded, for what needs no engine (help, argument errors)."""
    ip.run_line_magic("load_ext", "mpcontainer_magics")
    yield ip
    ip.run_line_magic("unload_ext", "mpcontainer_magics")


def test_every_subcommand_has_its_handler_and_its_help_line(loaded, capsys):
    handlers = {name.removeprefix("_line_") for name in dir(ContainerMagics)}
    assert set(SUBCOMMANDS) <= handlers
    assert {n[6:] for n in dir(ContainerMagics) if n.startswith("_line_")} == set(SUBCOMMANDS)

    loaded.run_line_magic("container", "help")
    listing = capsys.readouterr().out
    docstring = loaded.find_line_magic("container").__doc__  # what %container? shows
    for name, subcommand in SUBCOMMANDS.items():
        for text in (listing, docstring):
            assert f"  %container {name}" in text and subcommand.summary[:40] in text
    # %%container? still documents the cell's own options.
    assert "--session NAME" in docstring and "--raise-error" in docstring


def test_help_for_one_subcommand_shows_its_options(loaded, capsys):
    loaded.run_line_magic("container", "help cp")
    shown = capsys.readouterr().out
    assert "  %container cp source dest\n" in shown and SUBCOMMANDS["cp"].summary in shown
    with pytest.raises(UsageError, match="unknown subcommand 'frob'; one of: pull, platforms"):
        loaded.run_line_magic("container", "help frob")


def test_an_unknown_subcommand_lists_every_one(loaded):
    with pytest.raises(UsageError) as exc:
        loaded.run_line_magic("container", "frobnicate")
    message = str(exc.value)
    assert message.startswith("unknown subcommand 'frobnicate'; use %%container as a cell magic")
    assert all(f"%container {name}" in message for name in SUBCOMMANDS)
    assert "%container help" in message and "\n" not in message


def test_a_line_that_cannot_be_parsed_says_how_to_fix_it(loaded):
    with pytest.raises(UsageError) as exc:
        loaded.run_line_magic("container", "cp 'unclosed b:/x")
    assert "No closing quotation; close the quote, or escape it with a backslash" in str(exc.value)


def test_cp_errors_name_the_fix(shell, tmp_path):
    shell.run_cell_magic("container", "--session fix", "true")
    native = shell.magics_manager.registry["ContainerMagics"]._client.get_session("fix").platforms
    other = "linux/s390x" if str(native[0]) != "linux/s390x" else "linux/arm64"
    for line, message in [
        (
            f"cp {tmp_path / 'nope'} fix:/x",
            f"{tmp_path / 'nope'} does not exist on this machine; check the path",
        ),
        (
            f"cp fix@{other}:/etc {tmp_path / 'etc'}",
            f"session 'fix' has no {other} container; it runs on {native[0]}. Name one of "
            f"those, or add {other}: %%container --session fix --platform {other}",
        ),
        (
            f"cp fix:/no/such {tmp_path / 'x'}",
            "/no/such does not exist in the container; check the name, e.g. list /no with ls",
        ),
    ]:
        with pytest.raises(UsageError) as exc:
            shell.run_line_magic("container", line)
        assert message in str(exc.value) and "\n" not in str(exc.value)
    shell.run_line_magic("container", "stop fix")


def test_cp_from_every_platform_is_all_or_nothing(shell, tmp_path):
    shell.run_cell_magic("container", "--session both --platform linux/arm64,linux/s390x", "true")
    shell.run_cell_magic("container", "--session both --platform linux/arm64", "echo x > /only")
    # linux/arm64's copy is made, then linux/s390x has no /only: the arm64 copy is taken back.
    with pytest.raises(UsageError, match="/only does not exist in the container"):
        shell.run_line_magic("container", f"cp both:/only {tmp_path / 'out'}")
    assert list(tmp_path.iterdir()) == []
    shell.run_line_magic("container", "stop both")
