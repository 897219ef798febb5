"""`bassgen eval --data DIR --generated DIR [--reference REF] [--out report.json]`.

Scores generated bass stems against a rendered or prepared dataset next to three baselines (the
true bass through the autoencoder, shuffled pairs, silence); writes JSON, a Markdown table and a
plot. See bassgen/evaluation/dataset.py.
"""
from __future__ import annotations

import argparse
import pathlib

from bassgen.codec import Codec
from bassgen.data import audio
from bassgen.errors import BassgenError
from bassgen.evaluation import chroma_baseline
from bassgen.evaluation import dataset
from bassgen.generation import BassGenerator, SampleOptions

DEFAULT_CHECKPOINT = "experiments/demo"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--data", required=True,
                      help="rendered folder (one folder per song with bass.wav and the other "
                           "stems) or prepared dataset (bassgen prepare)")
  parser.add_argument("--generated", required=True,
                      help="folder of generated stems named <track>.bass.wav")
  parser.add_argument("--reference", default=None,
                      help="timbre reference: one bass recording, or a folder of <track>.wav "
                           "(default: each track's true bass)")
  parser.add_argument("--out", default=None,
                      help="report JSON path (default GENERATED/report.json; .md and .png "
                           "are written beside it)")
  parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT,
                      help="bundle or diffusion workdir: generates missing stems and supplies the "
                           "autoencoder of the ground-truth baseline (default: the demo model)")
  parser.add_argument("--no-generate", action="store_true",
                      help="fail on a missing generated stem instead of generating it")
  parser.add_argument("--seconds", type=float, default=12.0,
                      help="score the first SECONDS of each track (0 = whole tracks)")
  parser.add_argument("--tracks", type=int, default=0, help="score the first N tracks (0 = all)")
  parser.add_argument("--tracker", default="auto", choices=("auto", "pyin", "swift-f0"),
                      help="f0 tracker of the harmony metrics")
  parser.add_argument("--embedding", default="stats",
                      help="embedding of the distribution metric: 'stats' or module:function")
  parser.add_argument("--guidance", type=float, default=None, help="when generating")
  parser.add_argument("--steps", type=int, default=None, help="when generating")
  parser.add_argument("--seed", type=int, default=0, help="when generating")
  parser.add_argument("--baseline-data", default=None,
                      help="training renders (e.g. data/renders/train) to fit the linear chroma "
                           "baseline on; adds its argmax and sampled rows (renders with a score)")
  parser.add_argument("--overwrite", action="store_true", help="replace an existing report")


def _reference(spec, tracks, sample_rate):
  if not spec:
    return None
  path = pathlib.Path(spec)
  if path.is_file():
    return audio.load_audio(path, sample_rate)[0]
  if path.is_dir():
    refs = []
    for t in tracks:
      f = path / f"{t.name}.wav"
      if not f.is_file():
        raise BassgenError(f"{f}: missing. A --reference folder needs <track>.wav for every track.")
      refs.append(audio.load_audio(f, sample_rate)[0])
    return refs
  raise BassgenError(f"{path}: no such file or folder (--reference)")


def run(args: argparse.Namespace) -> int:
  evaluate(**vars(args))
  return 0


def evaluate(data: str, generated: str, *, reference: str | None = None, out: str | None = None,
             checkpoint: str = DEFAULT_CHECKPOINT, no_generate: bool = False,
             seconds: float = 12.0, tracks: int = 0, tracker: str = "auto",
             embedding: str = "stats", guidance: float | None = None, steps: int | None = None,
             seed: int = 0, baseline_data: str | None = None, overwrite: bool = False) -> dict:
  """`bassgen eval` (and `python -m bassgen.main --mode=eval`) as a library call; arguments as
  the command's options. Returns the report (also written as JSON, Markdown and a plot)."""
  generated = pathlib.Path(generated)
  out = pathlib.Path(out) if out else generated / "report.json"
  dataset.check_report_paths(out, overwrite=overwrite)
  audio.check_writable_dir(out.parent)
  codec = Codec.load(checkpoint)
  sr = codec.sample_rate
  track_list = dataset.load_tracks(data, sr, seconds=seconds or None,
                               max_tracks=tracks or None)
  print(f"{len(track_list)} tracks of {data} at {sr} Hz"
        + (f", first {seconds:g} s" if seconds else ""), flush=True)
  reference_audio = _reference(reference, track_list, sr)  # checked before any long work
  if not no_generate:
    load = (lambda: BassGenerator.load(checkpoint)) if checkpoint else None
    dataset.generate_missing(track_list, sr, generated, load_generator=load,
                             options=SampleOptions(guidance=guidance, steps=steps,
                                                   seed=seed))
  systems = {"generated": dataset.load_generated(track_list, sr, generated)}
  systems.update(dataset.baselines(track_list, codec, sr))
  if baseline_data:
    print(f"fitting the linear chroma baseline on {baseline_data}", flush=True)
    systems.update(dataset.chroma_baseline_tracks(
        track_list, sr, chroma_baseline.fit_on_renders(baseline_data)))
  result = dataset.score(track_list, systems, sr, reference=reference_audio,
                         tracker=tracker, embedding=embedding)
  result.update(data=str(data), generated=str(generated), checkpoint=str(checkpoint),
                seconds=seconds)
  paths = dataset.write_report(result, out, overwrite=overwrite)
  print(dataset.markdown_table(result))
  print("wrote " + ", ".join(str(p) for p in paths))
  return result
