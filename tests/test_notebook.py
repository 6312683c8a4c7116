"""examples/quickstart.ipynb runs headless: demo data -> fit -> predict -> evaluate through the API.

The notebook is executed with nbclient in a `python3` kernel that is this test's own interpreter:
a kernelspec pointing at `sys.executable` is written into a temporary JUPYTER_PATH, which Jupyter
searches before any user or system kernel, so a stray `python3` kernel elsewhere is never used.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbclient
import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "quickstart.ipynb"
MACRO_F1 = re.compile(r"macro-F1: ([0-9]*\.?[0-9]+)")


def write_kernelspec(jupyter_dir: Path) -> None:
    kernel_dir = jupyter_dir / "kernels" / "python3"
    kernel_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (maskcls venv)", "language": "python"}
    (kernel_dir / "kernel.json").write_text(json.dumps(spec, indent=1) + "\n")


def outputs(nb):
    return [output for cell in nb.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]


def test_committed_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "clear the notebook's outputs before committing it"


def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    jupyter_dir = tmp_path / "jupyter"
    write_kernelspec(jupyter_dir)
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_dir))
    work = tmp_path / "work"
    monkeypatch.setenv("MASKCLS_QUICKSTART_DIR", str(work))

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, if any cell fails

    outs = outputs(nb)
    assert not [out for out in outs if out.output_type == "error"]
    text = "".join(out.get("text", "") for out in outs if out.output_type == "stream")
    assert str(work) in text  # the notebook worked in the folder it was given
    found = MACRO_F1.findall(text)
    assert found, f"no 'macro-F1: <value>' line in the notebook's output:\n{text[-2000:]}"
    assert 0.0 <= float(found[-1]) <= 1.0
    assert any(out.output_type == "display_data" and "image/png" in out.get("data", {}) for out in outs)

    submission = work / "submission.csv"
    assert submission.is_file()
    rows = submission.read_text().splitlines()
    info = (work / "data" / "eval" / "info.csv").read_text().splitlines()
    assert rows[0] == "ImageID,ans" and len(rows) == len(info) > 1
    assert (work / "report" / "report.html").is_file()
    assert (work / "report" / "confusion_18.png").is_file()
