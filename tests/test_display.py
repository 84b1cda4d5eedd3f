"""The result table as rich HTML (Jupyter) and as plain text (terminals)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from conftest import FIVE_PLATFORMS
from IPython.utils.capture import capture_output

from mpcontainer_magics.platforms import Platform
from mpcontainer_magics.results import (
    COLUMNS,
    DIFFERS_STYLE,
    EXIT_COLOURS,
    FAILED_STYLE,
    PlatformResult,
    RunResult,
    _minority,
)

BYTE_ORDER = "printf '\\001\\002\\003\\004' | od -An -tx4"


def row(
    platform: str,
    exit_code: int | None = 0,
    stdout: str = "",
    stderr: str = "",
    *,
    error: str | None = None,
    timed_out: bool = False,
    digest: str | None = "sha256:0",
) -> PlatformResult:
    return PlatformResult(
        platform=Platform.parse(platform),
        exit_code=exit_code,
        stdout=stdout,
        stderr=stderr,
        duration_s=0.25,
        emulated=platform != "linux/amd64",
        image_digest=digest,
        engine="docker",
        error=error,
        timed_out=timed_out,
    )


class Table:
    """The cells of a rendered table: their HTML and their CSS, by (row, column name)."""

    def __init__(self, page: str) -> None:
        self.page = page
        self.css: dict[tuple[int, str], str] = {}
        style = page.split("</style>")[0]
        for selectors, props in re.findall(r"([^{}]+)\{([^}]*)\}", style):
            for r, c in re.findall(r"_row(\d+)_col(\d+)", selectors):
                key = (int(r), COLUMNS[int(c)])
                self.css[key] = self.css.get(key, "") + " ".join(props.split())
        self.html = {
            (int(r), COLUMNS[int(c)]): body
            for r, c, body in re.findall(
                r'<td id="T_\w+_row(\d+)_col(\d+)"[^>]*>(.*?)</td>', page, re.DOTALL
            )
        }

    def style(self, r: int, column: str) -> str:
        return self.css.get((r, column), "")

    def colour(self, r: int) -> str:
        found = re.search(r"(?<!-)color: (#\w+)", self.style(r, "exit_code"))
        return found.group(1) if found else ""

    def differs(self, r: int, column: str) -> bool:
        return DIFFERS_STYLE.split(": ")[1] in self.style(r, column)


def same_table(a: str, b: str) -> bool:
    """Equal but for the random id pandas gives each rendered table."""
    return re.sub(r"T_[0-9a-f]+", "T_", a) == re.sub(r"T_[0-9a-f]+", "T_", b)


def test_exit_codes_are_coloured_and_failed_rows_marked():
    res = RunResult(
        "img",
        ["sh"],
        [
            row("linux/amd64", 0),
            row("linux/arm64", 3),
            row("linux/s390x", None, error="timed out after 2 s", timed_out=True),
            row("linux/ppc64le", None, error="no QEMU emulation for linux/ppc64le"),
        ],
    )
    table = Table(res._repr_html_())
    assert [table.colour(r) for r in range(4)] == [
        EXIT_COLOURS["ok"],
        EXIT_COLOURS["failed"],
        EXIT_COLOURS["none"],
        EXIT_COLOURS["none"],
    ]
    assert table.html[0, "exit_code"] == "0" and table.html[1, "exit_code"] == "3"
    assert table.html[2, "exit_code"] == "—"  # no exit code; the error column says why
    assert table.html[2, "error"] == "timed out after 2 s"
    assert table.html[2, "image_digest"] == "sha256:0"
    marked = FAILED_STYLE.split(": ")[1]
    assert [marked in table.style(r, "platform") for r in range(4)] == [False, True, True, True]


def test_the_minority_of_a_differing_output_is_highlighted():
    outputs = ["04030201\n", "04030201\n", "01020304\n", "04030201\n", "04030201\n"]
    platforms = FIVE_PLATFORMS.split(",")
    res = RunResult(
        "img", ["sh"], [row(p, 0, out) for p, out in zip(platforms, outputs, strict=True)]
    )
    table = Table(res._repr_html_())
    assert [table.differs(r, "stdout") for r in range(5)] == [False, False, True, False, False]
    # Columns that agree everywhere are plain.
    assert not any(table.differs(r, c) for r in range(5) for c in ("exit_code", "stderr"))
    assert "differs from the majority" in res._repr_html_()  # the legend says what it means


def test_every_value_is_highlighted_when_there_is_no_majority():
    machines = ["x86_64", "aarch64", "s390x"]
    platforms = ["linux/amd64", "linux/arm64", "linux/s390x"]
    res = RunResult(
        "img", ["sh"], [row(p, 0, m + "\n") for p, m in zip(platforms, machines, strict=True)]
    )
    assert [Table(res._repr_html_()).differs(r, "stdout") for r in range(3)] == [True] * 3


@pytest.mark.parametrize(
    ("values", "marked"),
    [
        (["a", "a", "a"], [False, False, False]),
        (["a"], [False]),
        ([], []),
        (["a", "a", "b"], [False, False, True]),
        (["a", "b", "c"], [True, True, True]),
        (["a", "a", "b", "b"], [True, True, True, True]),  # a tie: no single majority
        (["a", "a", "b", "b", "b", "c"], [True, True, False, False, False, True]),
    ],
)
def test_minority(values, marked):
    assert _minority(values) == marked


def test_long_output_is_folded_with_the_full_text_inside():
    long = "".join(f"line {i}\n" for i in range(1, 101))
    res = RunResult(
        "img", ["sh"], [row("linux/amd64", 0, long), row("linux/arm64", 0, "one\ntwo\n")]
    )
    table = Table(res._repr_html_())
    folded = table.html[0, "stdout"]
    assert folded.startswith("<details><summary><code>line 1</code>")
    assert "(100 lines)" in folded
    body = re.search(r"<pre>(.*)</pre></details>", folded, re.DOTALL)
    assert body is not None and body.group(1) == long  # every line is kept
    assert table.html[1, "stdout"] == "<pre>one\ntwo</pre>"  # short: shown as is

    one_long_line = "x" * 1000
    cell = Table(RunResult("img", ["sh"], [row("linux/amd64", 0, one_long_line)])._repr_html_())
    assert "(1000 characters)" in cell.html[0, "stdout"]
    assert one_long_line in cell.html[0, "stdout"]


def test_all_text_is_escaped():
    evil = "<script>alert('x')</script> & <b>"
    res = RunResult(
        "img",
        ["sh"],
        [
            row("linux/amd64", 1, evil, evil * 50, error=evil),
            row("linux/arm64", 0, evil + "\n" * 10, digest=evil),
        ],
    )
    page = res._repr_html_()
    assert "<script>" not in page and "<b>" not in page
    assert "&lt;script&gt;" in page
    table = Table(page)
    assert (
        table.html[0, "stdout"]
        == "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &lt;b&gt;"
    )
    assert table.html[1, "image_digest"].startswith("&lt;script&gt;")


def test_plain_text_repr_is_the_text_table_and_summary():
    res = RunResult(
        "img", ["sh"], [row("linux/amd64", 0, "x86_64\n"), row("linux/s390x", 1, "s390x\n")]
    )
    text = repr(res)
    assert text == f"{res.to_frame().to_string(index=False)}\n{res.summary()}"
    assert "<" not in text and "exit code differs" in text


@pytest.fixture
def rich_shell(shell: Any) -> Any:
    """The shell formatting HTML too, as a Jupyter kernel does (a terminal shell: text only)."""
    formatter = shell.display_formatter
    active = list(formatter.active_types)
    formatter.active_types = [*active, "text/html"]
    yield shell
    formatter.active_types = active


def test_the_cell_magic_displays_the_rich_table(rich_shell, engine_kind):
    fails_on_s390x = f'{BYTE_ORDER}\n[ "$(uname -m)" != s390x ]'
    with capture_output() as captured:
        rich_shell.run_cell_magic(
            "container", f"--platform {FIVE_PLATFORMS} --out res", fails_on_s390x
        )
    shell = rich_shell
    res = shell.user_ns["res"]
    (shown,) = [o.data for o in captured.outputs if "text/html" in o.data]
    page: Any = shown["text/html"]
    formatted = shell.display_formatter.format(res)[0]["text/html"]
    assert same_table(page, formatted)  # what display() showed is the result's own HTML
    assert shown["text/plain"] == repr(res)  # terminals keep the plain table
    table = Table(page)
    order = [str(r.platform) for r in res]
    s390x = order.index("linux/s390x")
    for r, name in enumerate(order):
        expected = EXIT_COLOURS["failed"] if name == "linux/s390x" else EXIT_COLOURS["ok"]
        assert table.colour(r) == expected, name
        # Big-endian s390x prints 01020304, the four others 04030201: s390x stands out.
        assert table.differs(r, "stdout") == (r == s390x), name
        assert table.differs(r, "exit_code") == (r == s390x), name
        assert not table.differs(r, "stderr")
    assert "01020304" in table.html[s390x, "stdout"]
    assert table.html[s390x, "exit_code"] == "1"
