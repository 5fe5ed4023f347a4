"""train.ipynb runs top to bottom on the CPU, offline, and is committed without outputs."""

import json
import os

import nbformat
from nbclient import NotebookClient

from conftest import FINEWEB_CSV, ROOT, require_shared_data

NOTEBOOK = ROOT / "train.ipynb"


def test_notebook_is_committed_without_outputs():
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    assert [
        c for c in cells if c["cell_type"] == "code" and (c["outputs"] or c["execution_count"])
    ] == []


def test_notebook_runs_end_to_end(tmp_path, monkeypatch):
    require_shared_data(FINEWEB_CSV)
    # The kernel inherits this environment: local data instead of the hub, the project importable
    # from the temporary working directory that receives what the notebook writes.
    monkeypatch.setenv("NOTEBOOK_DATA_FILES", str(FINEWEB_CSV))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    )
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    outputs = {
        i: "".join(o.get("text", "") for o in cell.outputs)
        for i, cell in enumerate(notebook.cells)
        if cell.cell_type == "code"
    }
    text = "\n".join(outputs.values())
    assert "parameters, counted once: 124,439,808" in text
    assert "saved notebook_run/log/model_00050.pt" in text
    assert (tmp_path / "notebook_run" / "log" / "log.txt").is_file()
    assert text.count("Hello, I'm a language model,") >= 4
