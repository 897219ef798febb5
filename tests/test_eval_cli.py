"""`bassgen eval` and `--mode=eval`: scoring generated stems next to the three baselines."""
import json
import pathlib
import shutil

import numpy as np
import pytest
import soundfile as sf

from bassgen import cli
from bassgen.evaluation import synthetic
from fixtures import make_random_bundle

SR = 8000
ROOTS = (45, 50, 52, 43)  # one bass root (MIDI) per song: A2, D3, E3, G2


def _write_songs(root: pathlib.Path, seconds=4.0):
  """Rendered-folder layout: per song a bass on the chord roots, and a keys part with the chords."""
  for i, r in enumerate(ROOTS):
    d = root / f"song{i}"
    d.mkdir(parents=True)
    beats = np.arange(0.0, seconds, 0.5)
    notes = [{"pitch": r, "onset": float(b), "offset": float(b) + 0.45} for b in beats]
    bass = synthetic.bass_line(notes, SR, seconds)
    keys = synthetic.chord_pad([(0.0, seconds, [p + 12 for p in synthetic.triad(r)])], SR, seconds)
    drums = np.zeros_like(bass)
    drums[(beats * SR).astype(int)] = 0.8  # clicks on the beats
    for name, wav in (("bass", bass), ("keys", keys), ("drums", drums)):
      sf.write(d / f"{name}.wav", wav.astype(np.float32), SR)
    (d / "song.json").write_text(json.dumps({   # the score, as bassgen render writes it
        "chords": [{"start": 0.0, "end": seconds, "pitches": [p + 12 for p in synthetic.triad(r)]}],
        "bass_notes": [{"start": n["onset"], "end": n["offset"], "pitch": r} for n in notes]}))
  return root


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  base = tmp_path_factory.mktemp("eval")
  return make_random_bundle(base / "bundle"), _write_songs(base / "songs")


def test_eval_scores_true_bass_high_and_writes_the_report(setup, tmp_path, capsys):
  bundle, songs = setup
  gen = tmp_path / "gen"
  gen.mkdir()
  for d in sorted(songs.iterdir()):  # "generated" = the true bass: a known answer
    shutil.copy(d / "bass.wav", gen / f"{d.name}.bass.wav")
  code = cli.main(["eval", "--data", str(songs), "--generated", str(gen), "--checkpoint",
                   str(bundle), "--no-generate", "--seconds", "0", "--tracker", "pyin",
                   "--baseline-data", str(songs)])
  out, err = capsys.readouterr()
  assert code == 0, err
  report = json.loads((gen / "report.json").read_text())
  assert (gen / "report.md").is_file() and (gen / "report.png").is_file()
  assert set(report["systems"]) == {"generated", "true_bass", "ground_truth_ae", "shuffled",
                                    "silence", "chroma_linear_argmax", "chroma_linear_sampled"}
  g, s = report["systems"]["generated"]["mean"], report["systems"]["shuffled"]["mean"]
  # Against the score: the true bass closes the whole shuffled -> true gap, another song's bass
  # (another root) none of it.
  assert g["score_pitch_class_accuracy"] > 0.9 and g["score_chord_tone_rate"] > 0.9
  assert g["score_pitch_class_accuracy_gap"] == pytest.approx(1.0)
  assert s["score_pitch_class_accuracy"] < 0.1 and s["score_pitch_class_accuracy_gap"] == 0.0
  assert g["median_cents_off"] < 5.0
  lin = report["systems"]["chroma_linear_argmax"]["mean"]
  assert lin["score_chord_tone_rate"] > 0.5   # it reads the keys' chords
  assert g["pitch_class_accuracy"] > 0.9 and g["chord_tone_share"] > 0.9
  assert g["timbre_fd"] < 1e-6 and g["fad"] < 1e-6
  assert s["pitch_class_accuracy"] < 0.5 and s["chord_tone_share"] < g["chord_tone_share"]
  assert report["systems"]["silence"]["mean"]["chord_tone_share"] is None  # undefined, not 0
  assert "| generated |" in out
  # The report is never overwritten silently.
  code = cli.main(["eval", "--data", str(songs), "--generated", str(gen), "--checkpoint",
                   str(bundle), "--no-generate", "--seconds", "0"])
  assert code == 1 and "already exists" in capsys.readouterr().err


def test_eval_generates_missing_stems_and_runs_from_the_config(setup, tmp_path, capsys):
  from bassgen import runner
  from bassgen.config_loading import load_config
  bundle, songs = setup
  cfg = load_config(str(pathlib.Path(__file__).parents[1] / "configs" / "eval.py"))
  cfg.eval.update(data=str(songs), generated=str(tmp_path / "gen"), checkpoint=str(bundle),
                  seconds=2.0, tracks=2, steps=2, tracker="pyin")
  runner.run(cfg, str(tmp_path), "eval")
  assert sorted(p.name for p in (tmp_path / "gen").glob("*.bass.wav")) == [
      "song0.bass.wav", "song2.bass.wav"]  # 2 of 4 tracks, spread evenly
  report = json.loads((tmp_path / "gen" / "report.json").read_text())
  assert report["tracks"] == ["song0", "song2"]


def test_eval_missing_stem_names_the_file(setup, tmp_path, capsys):
  bundle, songs = setup
  code = cli.main(["eval", "--data", str(songs), "--generated", str(tmp_path / "none"),
                   "--checkpoint", str(bundle), "--no-generate"])
  err = capsys.readouterr().err
  assert code == 1 and "song0.bass.wav: missing" in err and "Traceback" not in err
