"""What a run on several platforms produced: ``RunResult`` of ``PlatformResult`` rows.

Results are data: index them by platform, turn them into a DataFrame (``to_frame``), see
what agrees and what differs (``summary``), render them as an HTML table in Jupyter, or
turn failed rows into exceptions (``check``). Running lives in :mod:`.runs`.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import MPCError, NonZeroExit, RunTimeout
from .platforms import Platform

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = [
    "platform",
    "exit_code",
    "stdout",
    "stderr",
    "duration_s",
    "emulated",
    "image_digest",
    "engine",
    "node",
    "error",
]


@dataclass(frozen=True)
class PlatformResult:
    """What one platform did."""

    platform: Platform
    exit_code: int | None  # None when the command did not finish (see ``error``)
    stdout: str
    stderr: str
    duration_s: float
    emulated: bool
    image_digest: str | None
    engine: str
    node: str = ""  # the fleet's node it ran on; "" with a single engine
    error: str | None = None
    timed_out: bool = False
    exception: MPCError | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.error is None


class RunResult:
    """The results of one command on several platforms; index by platform, position or str."""

    def __init__(
        self,
        image: str,
        argv: Sequence[str],
        results: Iterable[PlatformResult],
        *,
        timeout: float | None = None,
        wall_s: float = 0.0,
        session: str | None = None,
    ) -> None:
        self.image = image
        self.argv = tuple(argv)
        self.results = tuple(results)
        self.timeout = timeout
        self.wall_s = wall_s
        #: The name of the session the command ran in (its files can be published), if any.
        self.session = session
        #: What the run should tell its user beside the output (e.g. mounts copied to a node).
        self.notes: list[str] = []

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[PlatformResult]:
        return iter(self.results)

    def __getitem__(self, key: int | str | Platform) -> PlatformResult:
        if isinstance(key, int):
            return self.results[key]
        wanted = Platform.parse(key) if isinstance(key, str) else key
        for result in self.results:
            if result.platform.matches(wanted):
                return result
        raise KeyError(f"{wanted} is not in this result; it has {', '.join(self.platform_names)}")

    @property
    def platform_names(self) -> list[str]:
        return [str(r.platform) for r in self.results]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def stdout(self) -> dict[str, str]:
        return {str(r.platform): r.stdout for r in self.results}

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        rows = [
            {
                "platform": str(r.platform),
                "exit_code": r.exit_code,
                "stdout": r.stdout,
                "stderr": r.stderr,
                "duration_s": round(r.duration_s, 3),
                "emulated": r.emulated,
                "image_digest": r.image_digest,
                "engine": r.engine,
                "node": r.node or "local",
                "error": r.error,
            }
            for r in self.results
        ]
        frame = pd.DataFrame(rows, columns=COLUMNS)
        frame["exit_code"] = frame["exit_code"].astype("Int64")
        return frame

    def summary(self) -> str:
        """Which outputs agree across platforms and which differ, in a few lines."""
        if not self.results:
            return "no platforms ran"
        lines = [_agreement("exit code", {r.platform: _exit_text(r) for r in self.results})]
        lines += _line_differences("stdout", {r.platform: r.stdout for r in self.results})
        lines += _line_differences("stderr", {r.platform: r.stderr for r in self.results})
        return "\n".join(lines)

    def check(self, *, nonzero: bool = False) -> RunResult:
        """Raise for platforms that timed out or failed to run (and non-zero exits if asked)."""
        timed_out = [str(r.platform) for r in self.results if r.timed_out]
        if timed_out:
            finished = [str(r.platform) for r in self.results if r.exit_code is not None]
            kept = f"; results of {', '.join(finished)} are kept" if finished else ""
            raise RunTimeout(
                f"{', '.join(timed_out)} did not finish within the {self.timeout:g} s limit and "
                f"{'was' if len(timed_out) == 1 else 'were'} stopped (what "
                f"{'it' if len(timed_out) == 1 else 'each'} printed until then is in the "
                f"result){kept}. Raise --timeout if the command needs longer (emulated "
                "platforms are slower).",
                self,
            )
        for r in self.results:
            if r.exception is not None:
                raise r.exception
        failed = [r for r in self.results if r.exit_code]
        if nonzero and failed:
            codes = ", ".join(f"{r.exit_code} on {r.platform}" for r in failed)
            raise NonZeroExit(f"the command exited non-zero: {codes}", self)
        return self

    def __repr__(self) -> str:
        return f"{self.to_frame().to_string(index=False)}\n{self.summary()}"

    def _repr_html_(self) -> str:
        """The comparison table as HTML (Jupyter); ``__repr__`` stays plain text.

        - ``exit_code`` is coloured: 0 green, non-zero red, none (timed out, did not run) grey;
          the platform cell of a failed row has a pink background.
        - ``exit_code``, ``stdout`` and ``stderr`` cells whose value is not the same on every
          platform are highlighted (yellow): when one value is shared by more platforms than
          any other, that majority stays plain and the others are highlighted; when there is
          no single majority (say, every platform printed something else), all are.
        - Outputs longer than a few lines (or characters) are folded into a ``<details>``
          element: its summary shows the first line and the line count, the full text is
          inside. All text is HTML-escaped.
        - Digests are shortened (``sha256:6bcdd96ba882…``, as ``docker images`` does; the
          full ones are in ``to_frame()``), and output cells are wide enough for a line: at five
          platforms the table fits a notebook's width, a short output on one line.
        """
        frame = self.to_frame()
        failed = [not r.ok for r in self.results]
        marked = {
            column: _minority(values)
            for column, values in (
                ("exit_code", [_exit_text(r) for r in self.results]),
                ("stdout", [r.stdout for r in self.results]),
                ("stderr", [r.stderr for r in self.results]),
            )
        }

        def row_styles(row: pd.Series) -> list[str]:
            styles = []
            for column in row.index:
                style = []
                if column == "platform" and failed[row.name]:
                    style.append(FAILED_STYLE)
                if column == "exit_code":
                    style.append(_exit_style(row[column]))
                if column in marked and marked[column][row.name]:
                    style.append(DIFFERS_STYLE)
                styles.append("; ".join(style))
            return styles

        styled = (
            frame.style.apply(row_styles, axis=1)
            .hide(axis="index")
            .format(escape="html", na_rep="")
            .format(_exit_cell, subset=["exit_code"])
            .format(_fold, subset=["stdout", "stderr", "error"])
            .format("{:.3f}", subset=["duration_s"])
            .format(_short_digest, subset=["image_digest"])
            .set_table_styles(
                [
                    {"selector": "td", "props": "text-align: left; vertical-align: top"},
                    *(
                        {"selector": f"td.col{frame.columns.get_loc(c)}", "props": props}
                        for c, props in OUTPUT_CELLS.items()
                    ),
                    {"selector": "th", "props": "text-align: left"},
                    {"selector": "pre", "props": "margin: 0; white-space: pre-wrap"},
                ]
            )
        )
        legend = (
            '<p style="font-size: smaller">exit code: '
            f'<span style="{_exit_style(0)}">0</span>, '
            f'<span style="{_exit_style(1)}">non-zero</span>, '
            f'<span style="{_exit_style(None)}">none</span>; '
            f'<span style="{DIFFERS_STYLE}">highlighted</span>: differs from the majority '
            "(all differing values when there is none)</p>"
        )
        return f"{styled.to_html()}{legend}<pre>{html.escape(self.summary())}</pre>"


#: Background of the platform cell of a row that failed (non-zero exit, timeout, no run).
FAILED_STYLE = "background-color: #fdd"
#: Background of a cell whose value differs between platforms (see ``_minority``).
DIFFERS_STYLE = "background-color: #fff3b0"
EXIT_COLOURS = {"ok": "#1a7f37", "failed": "#cf222e", "none": "#6e7781"}
#: Output cells: wide enough for a typical line, so that a narrow notebook squeezes other
#: columns first; longer lines wrap (anywhere, should they have no spaces).
OUTPUT_CELLS = {
    "stdout": "white-space: pre-wrap; overflow-wrap: anywhere; min-width: 12em",
    "stderr": "white-space: pre-wrap; overflow-wrap: anywhere; min-width: 8em",
}
#: Shown characters of a digest in the table ("sha256:" and 12 hex digits, as Docker shows).
SHORT_DIGEST = 19
#: Outputs with more lines or characters than this are folded in a ``<details>`` element.
FOLD_LINES = 6
FOLD_CHARS = 300


def _minority(values: Sequence[str]) -> list[bool]:
    """Which values to highlight: none when all agree; else all but a single largest group."""
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    if len(counts) <= 1:
        return [False] * len(values)
    ranked = sorted(counts.values(), reverse=True)
    if ranked[0] == ranked[1]:  # no single majority: every value is "different"
        return [True] * len(values)
    majority = max(counts, key=lambda value: counts[value])
    return [value != majority for value in values]


def _is_missing(value: object) -> bool:
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN; pd.NA raises on bool()
    except TypeError:
        return True


def _exit_style(code: object) -> str:
    if _is_missing(code):
        colour = EXIT_COLOURS["none"]
    else:
        colour = EXIT_COLOURS["ok"] if code == 0 else EXIT_COLOURS["failed"]
    return f"color: {colour}; font-weight: bold"


def _exit_cell(code: object) -> str:
    return "—" if _is_missing(code) else html.escape(str(code))


def _fold(text: object) -> str:
    """A text cell: escaped; multi-line in ``<pre>``; long ones folded in ``<details>``."""
    if text is None or not isinstance(text, str) or not text:
        return ""
    lines = text.splitlines()
    if len(lines) <= FOLD_LINES and len(text) <= FOLD_CHARS:
        shown = html.escape(text.rstrip("\n"))
        return shown if len(lines) <= 1 else f"<pre>{shown}</pre>"
    first = lines[0][:60] if lines else ""
    count = f"{len(lines)} lines" if len(lines) != 1 else f"{len(text)} characters"
    return (
        f"<details><summary><code>{html.escape(first)}</code>… ({count})</summary>"
        f"<pre>{html.escape(text)}</pre></details>"
    )


def _short_digest(digest: object) -> str:
    if not isinstance(digest, str) or not digest:
        return ""
    shown = digest if len(digest) <= SHORT_DIGEST + 1 else f"{digest[:SHORT_DIGEST]}…"
    return html.escape(shown)


def _exit_text(result: PlatformResult) -> str:
    if result.exit_code is not None:
        return str(result.exit_code)
    return "timed out" if result.timed_out else "did not run"


def _groups(values: Mapping[Platform, str]) -> list[tuple[str, list[Platform]]]:
    """Platforms grouped by equal value, largest group first."""
    grouped: dict[str, list[Platform]] = {}
    for platform, value in values.items():
        grouped.setdefault(value, []).append(platform)
    return sorted(grouped.items(), key=lambda item: -len(item[1]))


def _agreement(what: str, values: Mapping[Platform, str]) -> str:
    groups = _groups(values)
    if len(groups) == 1:
        return f"{what}: same on all {len(values)} platforms ({_clip(groups[0][0])})"
    return f"{what} differs: " + "; ".join(
        f"{_clip(value)} on {', '.join(map(str, platforms))}" for value, platforms in groups
    )


def _line_differences(what: str, texts: Mapping[Platform, str], limit: int = 8) -> list[str]:
    groups = _groups(texts)
    if len(groups) == 1:
        state = "empty everywhere" if not groups[0][0] else f"same on all {len(texts)} platforms"
        return [f"{what}: {state}"]
    split = {p: t.splitlines() for p, t in texts.items()}
    longest = max(len(lines) for lines in split.values())
    diffs = []
    for index in range(longest):
        values = {p: lines[index] if index < len(lines) else "" for p, lines in split.items()}
        if len(set(values.values())) > 1:
            diffs.append(_agreement(f"{what} line {index + 1}", values))
    shown = diffs[:limit]
    if len(diffs) > limit:
        shown.append(f"... and {len(diffs) - limit} more differing {what} lines")
    return shown


def _clip(text: str, width: int = 40) -> str:
    text = repr(text.strip())
    return text if len(text) <= width else text[: width - 4] + "...'"
