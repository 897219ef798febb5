"""The Colab notebooks (experiments/colab) run end to end, so they cannot rot.

Each notebook is executed by nbclient in a kernel of this venv, with its "parameters" cell
overridden the way papermill does it (a cell right after it): the `runlocal` configs, a few seconds
of synthetic stems, two training steps. The Colab-only steps (Drive, pip, uploads, downloads) are
skipped outside Colab; a static check makes sure each of them sits under `if IN_COLAB`.
"""
import ast
import json
import pathlib
import sys

import pytest

from test_sources import tone, write_folder_tree, write_wav

nbclient = pytest.importorskip("nbclient", reason="needs the notebooks extra (pip install .[notebooks])")
nbformat = pytest.importorskip("nbformat", reason="needs the notebooks extra")
pytest.importorskip("ipykernel", reason="needs the notebooks extra")

ROOT = pathlib.Path(__file__).parents[1]
COLAB = ROOT / "experiments" / "colab"
NOTEBOOKS = ("train_tpu.ipynb", "sample.ipynb")


def _kernel(tmp: pathlib.Path, monkeypatch) -> str:
  """A kernelspec that starts ipykernel with this interpreter (the test venv), found via JUPYTER_PATH."""
  spec = tmp / "jupyter" / "kernels" / "bassgen-test"
  spec.mkdir(parents=True)
  (spec / "kernel.json").write_text(json.dumps({
      "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
      "display_name": "bassgen test venv", "language": "python"}))
  monkeypatch.setenv("JUPYTER_PATH", str(tmp / "jupyter"))
  monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
  return "bassgen-test"


def _execute(name: str, params: dict, kernel: str):
  """Runs notebook `name` with `params` injected after its parameters cell; returns the notebook."""
  nb = nbformat.read(COLAB / name, as_version=4)
  at = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
  assert len(at) == 1, f"{name}: needs exactly one cell tagged 'parameters'"
  source = "# Parameters injected by tests/test_notebooks.py\n" + "\n".join(
      f"{k} = {v!r}" for k, v in params.items())
  nb.cells.insert(at[0] + 1, nbformat.v4.new_code_cell(source))
  nbclient.NotebookClient(nb, timeout=3600, kernel_name=kernel,
                          resources={"metadata": {"path": str(COLAB)}}).execute()
  return nb


def _outputs(nb, mime: str) -> list[str]:
  return [o["data"][mime] for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
          if mime in o.get("data", {})]


def _text(nb) -> str:
  return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                 for o in c.get("outputs", []) if o.get("output_type") == "stream")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """train_tpu.ipynb on CPU: runlocal configs, four 3-second tracks, two steps per model."""
  tmp = tmp_path_factory.mktemp("colab_train")
  write_folder_tree(tmp / "stems", stems_per_track=(("drums", "keys"), ("keys", "pad"),
                                                    ("drums", "guitar"), ("pad", "keys")),
                    seconds=3.0)
  with pytest.MonkeyPatch.context() as mp:
    kernel = _kernel(tmp, mp)
    nb = _execute("train_tpu.ipynb", {
        "VARIANT": "runlocal", "STEMS": str(tmp / "stems"), "LAYOUT": "folder",
        "WORKDIR": str(tmp / "work"), "AE_STEPS": 2, "LDM_STEPS": 2,
        "SAMPLE_ARGS": ["--steps", "2"], "TENSORBOARD": False}, kernel)
  return tmp, nb


@pytest.mark.slow
def test_train_notebook_prepares_trains_both_models_and_plays_a_sample(trained):
  tmp, nb = trained
  work = tmp / "work"
  text = _text(nb)
  assert "8 local / 8 devices" in text and "device 7: cpu" in text   # the topology cell
  assert "not on Colab: nothing installed" in text
  index = json.loads((work / "prepared" / "train" / "index.json").read_text())
  assert len(index["tracks"]) == 4 and index["sample_rate"] == 8000   # prepared at the config's rate
  for run in ("autoencoder", "ldm"):
    steps = sorted(int(p.name) for p in (work / run / "checkpoints").iterdir() if p.name.isdigit())
    assert steps[-1] == 2, f"{run}: trained {steps} steps, the notebook asked for 2"
    assert (work / run / "export").is_dir() and any((work / run / "tb").iterdir())
    assert json.loads((work / run / "config.json").read_text())["variant"] == "runlocal"
  assert {p.name for p in (work / "bundle").iterdir()} >= {"autoencoder", "ldm"}
  name = next(p.name for p in (work / "samples").glob("*.bass.wav")).removesuffix(".bass.wav")
  assert name.endswith("_mix")   # the default mix: the other stems of a prepared track
  for suffix in (".mix.wav", ".bass.wav", ".with_bass.wav", ".bass.mid", ".png"):
    assert (work / "samples" / f"{name}{suffix}").is_file(), suffix
  assert sum("<audio" in h for h in _outputs(nb, "text/html")) == 3   # mix, bass, both
  assert len(_outputs(nb, "image/png")) == 1   # the spectrogram with the bass's pitch


@pytest.mark.slow
def test_sample_notebook_plays_and_offers_bass_and_midi(trained, tmp_path, monkeypatch):
  tmp, _ = trained
  mix = write_wav(tmp_path / "my song.wav", tone(3, seconds=2.5, sr=22050), sr=22050)
  nb = _execute("sample.ipynb", {
      "BUNDLE": str(tmp / "work" / "bundle"), "MIX": str(mix), "STEPS": 2, "SEED": 1,
      "OUT": str(tmp_path / "out")}, _kernel(tmp_path, monkeypatch))
  out = tmp_path / "out"
  for suffix in (".bass.wav", ".with_bass.wav", ".bass.mid", ".png"):
    assert (out / f"my song{suffix}").is_file(), suffix
  text = _text(nb)
  assert "autoencoder: runlocal config, 8000 Hz" in text   # what the bundle holds
  assert "MIDI:" in text and "notes" in text
  assert f"{out / 'my song.bass.wav'}" in text and f"{out / 'my song.bass.mid'}" in text
  assert sum("<audio" in h for h in _outputs(nb, "text/html")) == 3   # the mix, bass, mix + bass
  assert len(_outputs(nb, "image/png")) == 1


def _colab_only_calls(tree: ast.AST) -> list[ast.AST]:
  """Statements that only work on Colab: google.colab imports, pip installs, git clones."""
  hits = []
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("google.colab"):
      hits.append(node)
    elif isinstance(node, ast.Call) and any(
        isinstance(a, ast.List) and any(isinstance(e, ast.Constant) and e.value in ("pip", "clone")
                                        for e in a.elts) for a in node.args):
      hits.append(node)
  return hits


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_colab_only_steps_are_guarded(name):
  """Every Drive mount, upload/download, pip install and git clone sits under `if ... IN_COLAB`."""
  nb = nbformat.read(COLAB / name, as_version=4)
  assert nb.cells[0].cell_type == "markdown" and "parameters" in nb.cells[1].metadata.get("tags", [])
  found = 0
  for cell in nb.cells:
    if cell.cell_type != "code":
      continue
    tree = ast.parse(cell.source)
    guarded = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.If) and "IN_COLAB" in ast.unparse(node.test):
        guarded |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    for hit in _colab_only_calls(tree):
      found += 1
      assert id(hit) in guarded, f"{name}: `{ast.unparse(hit)}` runs outside Colab too"
  assert found >= 2
