"""Scoring a folder of generated bass stems against a dataset, next to three baselines.

`bassgen eval` and `python -m bassgen.main --config=configs/eval.py --mode=eval` run this. For
each track of a rendered folder (one folder per song holding `bass.wav` and the other stems) or a
prepared dataset (`bassgen prepare` output), the mix is the sum of every stem but the bass, over
the first `seconds`. Four systems are scored the same way against it:

  generated        GENERATED/<track>.bass.wav (made with --checkpoint where missing)
  ground_truth_ae  the true bass through the autoencoder (the ceiling of the latent model)
  shuffled         the true bass of another track (a bass that does not belong to the mix)
  silence          an all-zero stem

Metrics per track (`bassgen.evaluation.suite.bass_metrics`): chord-tone share against the mix,
pitch-class accuracy and onset F-measure against the true bass, onset F-measure against the mix,
timbre distance to the true bass (or to a --reference recording); per system: the Fréchet
distance between its set of stems and the set of true basses (default "stats" embedding).
Undefined values (e.g. the harmony of silence: no voiced frame) are NaN and left out of means.
"""
from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from typing import Any, Callable, Sequence

import numpy as np

from bassgen.data import audio, pipeline, records
from bassgen.errors import BassgenError
from bassgen.evaluation import distribution, pitch, suite
from bassgen.evaluation import score as score_lib

SYSTEMS = ("generated", "true_bass", "ground_truth_ae", "shuffled", "silence")
# Systems that are pitch tracks, not audio (the linear chroma baseline): scored on the score only.
TRACK_SYSTEMS = ("chroma_linear_argmax", "chroma_linear_sampled")
# The score-based harmony metrics, reported as the share of the shuffled -> true-bass gap closed.
GAP_METRICS = ("score_chord_tone_rate", "score_pitch_class_accuracy")
# The metrics of the Markdown table, in order, with their direction.
TABLE = (("score_chord_tone_rate", "higher"), ("score_chord_tone_rate_gap", "higher"),
         ("score_pitch_class_accuracy", "higher"), ("score_pitch_class_accuracy_gap", "higher"),
         ("median_cents_off", "lower"), ("share_off_25c", "lower"), ("voiced_rate", ""),
         ("chord_tone_share", "higher"), ("pitch_class_accuracy", "higher"),
         ("onset_f_mix", "higher"), ("onset_f_ref", "higher"), ("timbre_fd", "lower"),
         ("fad", "lower"), ("bass_voiced_fraction", ""))


@dataclasses.dataclass
class Track:
  name: str
  mix: np.ndarray   # [S] at the evaluation rate: every stem but the target, summed
  bass: np.ndarray  # [S] the true target stem
  score: dict | None = None   # a render's score (song.json chords and bass notes), if known


def _fit(x: np.ndarray, n: int) -> np.ndarray:
  x = np.asarray(x, np.float32)[:n]
  return np.pad(x, (0, n - len(x)))


def _spread(items: list, n: int | None) -> list:
  return items if not n else items[:: max(1, len(items) // n)][:n]


def load_tracks(data_dir: str | pathlib.Path, sample_rate: int, *, seconds: float | None = 12.0,
                max_tracks: int | None = None, target: str = "bass") -> list[Track]:
  """Tracks of a rendered folder or a prepared dataset, at `sample_rate`, cut to `seconds`.

  With `max_tracks`, that many tracks spread evenly over the sorted list (so both songs and
  chorales of a render are represented).
  """

  data_dir = pathlib.Path(data_dir)
  if not data_dir.is_dir():
    raise BassgenError(f"{data_dir}: no such folder. Give a rendered folder (one folder per song "
                       "with bass.wav) or a prepared dataset (bassgen prepare).")
  tracks = []
  if (data_dir / "index.json").is_file():
    index = pipeline.read_index(data_dir)
    entries = _spread(index["tracks"], max_tracks)
    for t in entries:
      stems = np.concatenate(records.read_track(data_dir / t["file"]), axis=1)
      stems = audio.resample(stems, int(index["sample_rate"]), sample_rate)
      tracks.append(Track(t["name"], stems[1:].sum(0), stems[0], _score_beside(t)))
  else:
    folders = sorted(p for p in data_dir.iterdir() if (p / f"{target}.wav").is_file())
    if not folders:
      raise BassgenError(f"{data_dir}: no track folders with {target}.wav and no index.json. Give "
                         "a rendered folder (bassgen render) or a prepared dataset.")
    for p in _spread(folders, max_tracks):
      bass = audio.load_audio(p / f"{target}.wav", sample_rate)[0]
      others = [audio.load_audio(f, sample_rate)[0] for f in sorted(p.glob("*.wav"))
                if f.stem not in (target, "mix")]
      if not others:
        raise BassgenError(f"{p}: only the {target} stem is there, so there is no mix to score "
                           "against. Remove the folder or add its other stems.")
      n = max(len(bass), *(len(o) for o in others))
      song = score_lib.read_score(p) if (p / "song.json").is_file() else None
      tracks.append(Track(p.name, sum(_fit(o, n) for o in others), _fit(bass, n), song))
  if seconds:
    n = int(seconds * sample_rate)
    tracks = [Track(t.name, t.mix[:n], t.bass[:n],
                    None if t.score is None else score_lib.crop_score(t.score, seconds))
              for t in tracks]
  return tracks


def _score_beside(entry: dict) -> dict | None:
  """The score of a prepared track whose target stem came from a render (song.json beside it)."""
  for files in (entry.get("sources") or {}).values():
    for f in files:
      song = pathlib.Path(f).parent / "song.json"
      if song.is_file():
        return score_lib.read_score(song)
  return None


def generated_path(folder: pathlib.Path, name: str) -> pathlib.Path:
  return folder / f"{name}.bass.wav"


def generate_missing(tracks: Sequence[Track], sample_rate: int, folder: pathlib.Path, *,
                     load_generator: Callable[[], Any] | None, options: Any = None,
                     style: np.ndarray | None = None, log: Callable[[str], None] = print) -> None:
  """Writes GENERATED/<track>.bass.wav for tracks that lack one, with the generator (a
  `generation.BassGenerator`) that `load_generator()` gives; None: none may be missing."""

  missing = [t for t in tracks if not generated_path(folder, t.name).is_file()]
  if not missing:
    return
  if load_generator is None:
    raise BassgenError(f"{generated_path(folder, missing[0].name)}: missing. Generate the stems "
                       "first (bassgen sample), or pass --checkpoint to generate them here.")
  gen = load_generator()
  folder.mkdir(parents=True, exist_ok=True)
  for i, t in enumerate(missing):
    log(f"[{i + 1}/{len(missing)}] generating {t.name}")
    bass = gen.generate(t.mix, sample_rate, options=options, style_wav=style,
                        progress=f"    {t.name}")[0]
    audio.save_audio(generated_path(folder, t.name), bass, sample_rate)


def load_generated(tracks: Sequence[Track], sample_rate: int, folder: pathlib.Path
                   ) -> list[np.ndarray]:

  out = []
  for t in tracks:
    path = generated_path(folder, t.name)
    if not path.is_file():
      raise BassgenError(f"{path}: missing. Generate it (bassgen sample, or bassgen eval "
                         "--checkpoint) or leave the track out.")
    out.append(_fit(audio.load_audio(path, sample_rate)[0], len(t.mix)))
  return out


def baselines(tracks: Sequence[Track], codec: Any, sample_rate: int) -> dict[str, list[np.ndarray]]:
  """The three baselines of every track: true bass through `codec`, another track's bass, zeros."""

  n = len(tracks)
  through = []
  for t in tracks:
    x = audio.resample(t.bass, sample_rate, codec.sample_rate)
    y = audio.resample(codec.reconstruct(x), codec.sample_rate, sample_rate)
    through.append(_fit(y, len(t.bass)))
  shift = max(1, n // 2)
  shuffled = [_fit(tracks[(i + shift) % n].bass, len(t.bass)) for i, t in enumerate(tracks)]
  if n < 2:
    raise BassgenError("the shuffled-pairs baseline needs at least 2 tracks; give more data")
  return {"true_bass": [t.bass for t in tracks], "ground_truth_ae": through,
          "shuffled": shuffled, "silence": [np.zeros_like(t.bass) for t in tracks]}


def _nanmean(values: Sequence[float]) -> float:
  v = [x for x in values if x is not None and np.isfinite(x)]
  return float(np.mean(v)) if v else float("nan")


def score(tracks: Sequence[Track], systems: dict[str, Sequence[np.ndarray]], sample_rate: int, *,
          reference: np.ndarray | Sequence[np.ndarray] | None = None, tracker: str = "auto",
          embedding: str = "stats", log: Callable[[str], None] = print) -> dict[str, Any]:
  """Per-track and mean metrics of every system; see the module docstring."""

  refs = ([reference] * len(tracks) if isinstance(reference, np.ndarray) else reference)
  result: dict[str, Any] = {"sample_rate": sample_rate, "tracks": [t.name for t in tracks],
                            "systems": {}}
  songs = [suite.analyse_reference(sample_rate, mix=t.mix, ref_bass=t.bass,
                                   style_ref=None if refs is None else refs[i], tracker=tracker)
           for i, t in enumerate(tracks)]  # once per song, not once per system
  for name, stems in systems.items():
    if name in TRACK_SYSTEMS:   # pitch tracks: only the score-based metrics apply
      per_track = [score_lib.score_metrics(tr, t.score) if t.score is not None else {}
                   for t, tr in zip(tracks, stems)]
      means = {k: _nanmean([m.get(k, float("nan")) for m in per_track])
               for k in sorted({k for m in per_track for k in m})}
      result["systems"][name] = {"mean": means, "per_track": per_track}
      continue
    per_track = []
    for t, song, b in zip(tracks, songs, stems):
      track = pitch.track_pitch(b, sample_rate, tracker=tracker)   # once, for both kinds
      m = suite.bass_metrics(b, sample_rate, reference=song, tracker=tracker, bass_track=track)
      if t.score is not None:
        m.update(score_lib.score_metrics(track, t.score))
      per_track.append(m)
    keys = sorted({k for m in per_track for k in m})
    means = {k: _nanmean([m.get(k, float("nan")) for m in per_track]) for k in keys}
    try:
      means["fad"] = distribution.frechet_audio_distance(stems, [t.bass for t in tracks],
                                                         sample_rate, embedding=embedding)
    except (BassgenError, ValueError, np.linalg.LinAlgError):
      means["fad"] = float("nan")
    result["systems"][name] = {"mean": means, "per_track": per_track}
  add_gaps(result)
  for name, r in result["systems"].items():
    log(f"{name}: " + ", ".join(f"{k} {r['mean'][k]:.3f}" for k, _ in TABLE if k in r["mean"]))
  return result


def add_gaps(result: dict[str, Any]) -> None:
  """Adds `<metric>_gap` (share of the shuffled -> true-bass gap closed) to every system's means,
  for the score-based harmony metrics, when both baselines were scored."""
  sy = result["systems"]
  if "shuffled" not in sy or "true_bass" not in sy:
    return
  for k in GAP_METRICS:
    lo, hi = sy["shuffled"]["mean"].get(k), sy["true_bass"]["mean"].get(k)
    if lo is None or hi is None:
      continue
    for r in sy.values():
      if k in r["mean"]:
        r["mean"][f"{k}_gap"] = score_lib.gap_closed(r["mean"][k], lo, hi)


def chroma_baseline_tracks(tracks: Sequence[Track], sample_rate: int, baseline: Any, *,
                           hop_s: float = 0.016) -> dict[str, list]:
  """The linear chroma predictor's pitch tracks for every track, argmax and sampled, voiced where
  the score's bass sounds (it predicts a pitch class, not when the bass plays)."""
  out = {name: [] for name in TRACK_SYSTEMS}
  for t in tracks:
    times = np.arange(0.0, len(t.mix) / sample_rate, hop_s)
    ref = (pitch.notes_to_track(pitch.as_notes(t.score["bass_notes"]), times)
           if t.score is not None else None)
    for name, mode in zip(TRACK_SYSTEMS, ("argmax", "sampled")):
      tr = baseline.predict(t.mix, sample_rate, times, mode=mode)
      if ref is not None:
        tr = dataclasses.replace(tr, voiced=ref.voiced.copy(),
                                 f0_hz=np.where(ref.voiced, tr.f0_hz, np.nan))
      out[name].append(tr)
  return out


def _fmt(v: float) -> str:
  return "n/a" if v is None or not math.isfinite(v) else f"{v:.3f}"


def markdown_table(result: dict[str, Any]) -> str:
  systems = list(result["systems"])
  keys = [(k, d) for k, d in TABLE
          if any(k in result["systems"][s]["mean"] for s in systems)]
  head = "| system | " + " | ".join(f"{k}{' ↑' if d == 'higher' else ' ↓' if d == 'lower' else ''}"
                                     for k, d in keys) + " |"
  rows = [head, "|---|" + "---:|" * len(keys)]
  for s in systems:
    mean = result["systems"][s]["mean"]
    rows.append(f"| {s} | " + " | ".join(_fmt(mean.get(k, float("nan"))) for k, _ in keys) + " |")
  return "\n".join(rows) + "\n"


def plot(result: dict[str, Any], path: pathlib.Path) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  systems = list(result["systems"])
  keys = [k for k, _ in TABLE if k not in ("bass_voiced_fraction",)
          and any(k in result["systems"][s]["mean"] for s in systems)]
  fig, axes = plt.subplots(1, len(keys), figsize=(3.0 * len(keys), 3.2), squeeze=False)
  for ax, k in zip(axes[0], keys):
    vals = [result["systems"][s]["mean"].get(k, float("nan")) for s in systems]
    ax.bar(range(len(systems)), [0 if not math.isfinite(v) else v for v in vals],
           color=[f"C{i}" for i in range(len(systems))])
    ax.set_xticks(range(len(systems)), [s.replace("_", "\n") for s in systems], fontsize=7)
    ax.set_title(k, fontsize=9)
  fig.tight_layout()
  tmp = path.with_name(f".{path.name}.tmp.png")
  fig.savefig(tmp, dpi=110)
  plt.close(fig)
  tmp.replace(path)


def check_report_paths(out_json: pathlib.Path, *, overwrite: bool = False
                       ) -> tuple[pathlib.Path, pathlib.Path, pathlib.Path]:
  """(report.json, report.md, report.png) for `out_json`; raises if one exists and not
  `overwrite` (call it before the work, so a refusal costs nothing)."""
  paths = (out_json, out_json.with_suffix(".md"), out_json.with_suffix(".png"))
  if not overwrite:
    for p in paths:
      if p.exists():
        raise BassgenError(f"{p}: already exists. Pass --overwrite to replace it, or choose "
                           "another --out.")
  return paths


def write_report(result: dict[str, Any], out_json: pathlib.Path, *, overwrite: bool = False
                 ) -> list[pathlib.Path]:
  """report.json, report.md (the table) and report.png (bars per metric) next to each other."""

  _, md, png = check_report_paths(out_json, overwrite=overwrite)

  def clean(x):
    if isinstance(x, float) and not math.isfinite(x):
      return None
    if isinstance(x, dict):
      return {k: clean(v) for k, v in x.items()}
    if isinstance(x, list):
      return [clean(v) for v in x]
    return x

  audio.atomic_write_text(out_json, json.dumps(clean(result), indent=1) + "\n", overwrite=overwrite)
  audio.atomic_write_text(md, markdown_table(result), overwrite=overwrite)
  plot(result, png)
  return [out_json, md, png]
