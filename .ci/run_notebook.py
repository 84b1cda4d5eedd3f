"""Execute a notebook headless and print its text outputs to the terminal.

Usage: .venv/bin/python .ci/run_notebook.py NOTEBOOK.ipynb

- runs every cell with nbclient on the python3 kernel of *this* interpreter's venv
  (600 s timeout per cell), in the notebook's directory;
- prints each cell's stream text and the text/plain of execute_result/display_data;
- saves the executed notebook into a fresh temp dir (never into the repo);
- exits 1 if any cell raised (printing the error name and value), or on a timeout.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

# Make the venv's own kernelspec win over any python3 kernelspec in the user's jupyter dirs.
_VENV_JUPYTER = Path(sys.prefix) / "share" / "jupyter"
os.environ["JUPYTER_PATH"] = os.pathsep.join(
    p for p in (str(_VENV_JUPYTER), os.environ.get("JUPYTER_PATH", "")) if p
)

import nbformat  # noqa: E402
from nbclient import NotebookClient  # noqa: E402
from nbclient.exceptions import CellExecutionError, CellTimeoutError  # noqa: E402

CELL_TIMEOUT = 600
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _text(value: str | list[str]) -> str:
    return "".join(value) if isinstance(value, list) else value


def print_outputs(nb: nbformat.NotebookNode) -> list[str]:
    """Print all text outputs; return 'cell N: Ename: value' for every error output."""
    errors: list[str] = []
    for n, cell in enumerate(nb.cells, start=1):
        if cell.cell_type != "code":
            continue
        outputs = cell.get("outputs", [])
        if not outputs:
            continue
        print(f"----- cell {n} -----", flush=True)
        for out in outputs:
            kind = out.get("output_type")
            if kind == "stream":
                text = _text(out.get("text", ""))
                sys.stdout.write(text if text.endswith("\n") else text + "\n")
            elif kind in ("execute_result", "display_data"):
                plain = out.get("data", {}).get("text/plain")
                if plain is not None:
                    text = _text(plain)
                    sys.stdout.write(text if text.endswith("\n") else text + "\n")
            elif kind == "error":
                msg = f"{out.get('ename')}: {out.get('evalue')}"
                errors.append(f"cell {n}: {msg}")
                tb = [ANSI.sub("", line) for line in out.get("traceback", [])]
                print("\n".join(tb[-15:]))
                print(f"!!! {msg}")
        sys.stdout.flush()
    return errors


def check_kernel(client: NotebookClient) -> None:
    """Refuse to run on a kernel that is not this venv's python."""
    km = client.create_kernel_manager()
    argv0 = km.kernel_spec.argv[0]
    if argv0 in ("python", "python3", "{python}"):  # resolved by jupyter_client to sys.executable
        return
    if Path(argv0).resolve() != Path(sys.executable).resolve():
        raise SystemExit(
            f"kernel '{client.kernel_name}' would run {argv0}, not this venv's {sys.executable}; "
            "re-run .ci/setup (it installs the venv's kernelspec with --sys-prefix)"
        )


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    src = Path(argv[0]).resolve()
    nb = nbformat.read(src, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=CELL_TIMEOUT,
        allow_errors=True,  # run every cell; errors are reported and make us exit 1
        resources={"metadata": {"path": str(src.parent)}},
    )
    check_kernel(client)
    print(f"==> kernel python: {client.km.kernel_spec.argv[0]}", file=sys.stderr)

    failure = None
    try:
        client.execute()
    except CellTimeoutError as exc:
        failure = f"cell timed out after {CELL_TIMEOUT} s: {exc}"
    except CellExecutionError as exc:  # only with allow_errors=False / raises-exception tags
        failure = f"cell failed: {exc}"
    except Exception as exc:  # kernel died, etc.
        failure = f"{type(exc).__name__}: {exc}"

    errors = print_outputs(nb)

    out_dir = Path(tempfile.mkdtemp(prefix="mpc-notebook-"))
    out_path = out_dir / src.name
    nbformat.write(nb, out_path)
    print(f"==> executed notebook saved to {out_path}", file=sys.stderr)

    if failure:
        errors.append(failure)
    if errors:
        print(f"==> FAILED: {len(errors)} error(s)", file=sys.stderr)
        for e in errors:
            print(f"    {e}", file=sys.stderr)
        return 1
    print("==> notebook ran without errors", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
