"""`bassgen sample MIX... [options]`: a bass stem for each mix (the main job).

Every input is checked, and every output name reserved, before anything is generated, so a bad
input or an existing output stops the run with one message and nothing written. Each input's files
are written into a hidden folder inside --out and moved into place together once all of them are
done, so a stage that fails (or a process that dies) never leaves half an input's outputs behind.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import shutil
import sys
import tempfile
import time

import numpy as np

from bassgen import aot, compile_cache
from bassgen import notes as notes_lib
from bassgen import report, transcription
from bassgen.data import audio
from bassgen.errors import BassgenError
from bassgen.generation import BassGenerator, SampleOptions

DEFAULT_CHECKPOINT = "experiments/demo"
MIN_SECONDS = 0.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("mix", nargs="+", help="mix files or folders of them (any format, rate, "
                      "channel count and length)")
  parser.add_argument("--style", help="reference bass recording for timbre grounding")
  parser.add_argument("--guidance", type=float, help="classifier-free guidance w (1 = none)")
  parser.add_argument("--rescale", type=float, help="guidance rescale phi in [0, 1] (0 = plain)")
  parser.add_argument("--ground-strength", type=float, help="style grounding strength lambda")
  parser.add_argument("--steps", type=int, help="sampler steps")
  parser.add_argument("--sampler", choices=("heun", "dpmpp2m", "euler"))
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--num-samples", type=int, default=1, help="variants per input")
  parser.add_argument("--keep-bass", help="an existing bass to keep outside --regenerate")
  parser.add_argument("--regenerate", help="START:END in seconds: generate only this region")
  parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT,
                      help="bundle folder (autoencoder/ + ldm/) or a diffusion workdir")
  parser.add_argument("--out", default="samples", help="output folder (default: samples/)")
  parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def _inputs(paths: list[str]) -> list[pathlib.Path]:
  files = []
  for p in map(pathlib.Path, paths):
    if p.is_dir():
      found = audio.list_audio_files(p)
      if not found:
        raise BassgenError(f"{p}: the folder holds no audio files ({', '.join(audio.AUDIO_EXTENSIONS)}). "
                           "Give audio files or a folder of them.")
      files += found
    else:
      files.append(p)
  return files


def _parse_region(text: str | None) -> tuple[float, float] | None:
  if text is None:
    return None
  try:
    start, end = (float(x) for x in text.split(":"))
  except ValueError:
    raise BassgenError(f"--regenerate {text!r}: write it as START:END in seconds, e.g. 8:16") from None
  if not 0 <= start < end:
    raise BassgenError(f"--regenerate {text!r}: START must be >= 0 and below END")
  return start, end


@contextlib.contextmanager
def _staged(out: pathlib.Path, final: list[pathlib.Path], overwrite: bool):
  """Yields a hidden folder in `out`; on success moves its files to `final` (same names), else
  removes it. Files are only moved once every one of them has been written."""
  stage = pathlib.Path(tempfile.mkdtemp(prefix=".bassgen-partial-", dir=out))
  try:
    yield stage
    for p in final:
      if p.exists() and not overwrite:
        raise BassgenError(f"{p}: appeared while sampling. Pass --overwrite to replace it, or "
                           "choose another --out folder.")
    for p in final:
      os.replace(stage / p.name, p)
  finally:
    shutil.rmtree(stage, ignore_errors=True)


def _with_bass(mix, bass, block: int = 1 << 18):
  """Blocks of mix + bass, scaled to a 0.99 peak when the sum would clip (two passes over the
  blocks: memory holds one)."""
  n = len(mix)
  peak = max(float(np.max(np.abs(mix[i:i + block] + bass[i:i + block]))) for i in range(0, n, block))
  scale = 0.99 / peak if peak > 0.99 else 1.0
  for i in range(0, n, block):
    both = mix[i:i + block] + bass[i:i + block]
    yield both * scale if scale != 1.0 else both


def _summary(track, notes, midi_name) -> str:
  """One line about a generated bass for the page: notes, range, voiced share."""
  if not notes:
    return "no notes found"
  low, high = min(n.pitch for n in notes), max(n.pitch for n in notes)
  return (f"{len(notes)} notes, {midi_name(low)} to {midi_name(high)}, pitched in "
          f"{100 * float(track.pitch.voiced.mean()):.0f}% of frames")


def run(args: argparse.Namespace) -> int:
  sample(**vars(args))
  return 0


def sample(mix: list[str], *, style: str | None = None, guidance: float | None = None,
           rescale: float | None = None, ground_strength: float | None = None,
           steps: int | None = None, sampler: str | None = None, seed: int = 0,
           num_samples: int = 1, keep_bass: str | None = None, regenerate: str | None = None,
           checkpoint: str = DEFAULT_CHECKPOINT, out: str = "samples",
           overwrite: bool = False) -> pathlib.Path:
  """The main job as a library call (`bassgen sample` and `python -m bassgen.main --mode=sample`
  both come here): a bass stem, MIDI, picture and page for each mix in `mix` (files or folders),
  written into `out`. Arguments as the command's options. Returns the page's path."""
  if num_samples < 1:
    raise BassgenError(f"--num-samples {num_samples}: give 1 or more")
  if steps is not None and steps < 1:
    raise BassgenError(f"--steps {steps}: give 1 or more")
  region = _parse_region(regenerate)
  if (region is None) != (keep_bass is None):
    raise BassgenError("--keep-bass and --regenerate go together: give both or neither")

  # 1. Read and check every input before any work.
  mixes = []
  for f in _inputs(mix):
    wav, sr = audio.load_audio(f)
    if len(wav) < MIN_SECONDS * sr:
      raise BassgenError(f"{f}: only {len(wav)} samples ({len(wav) / sr:.3f} s); give at least "
                         f"{MIN_SECONDS} s of audio")
    if np.max(np.abs(wav)) < 1e-5:
      print(f"warning: {f}: the mix is silent; the bass will follow nothing", file=sys.stderr)
    mixes.append((f, wav, sr))
  style_audio = audio.load_audio(style) if style else None
  keep = audio.load_audio(keep_bass) if keep_bass else None

  # 2. Reserve every output name.
  out = audio.check_writable_dir(out)   # a pathlib.Path from here on
  k = num_samples
  plans = []
  for f, wav, sr in mixes:
    name = f.stem
    tags = [""] if k == 1 else [f".{i + 1}" for i in range(k)]
    files = {"bass": [out / f"{name}.bass{t}.wav" for t in tags],
             "with_bass": [out / f"{name}.with_bass{t}.wav" for t in tags],
             "midi": [out / f"{name}.bass{t}.mid" for t in tags],
             "png": out / f"{name}.png", "mix": out / f"{name}.mix.wav"}
    plans.append((f, wav, sr, name, files))
  names = [p for *_, files in plans for v in files.values() for p in (v if isinstance(v, list) else [v])]
  if len(set(names)) != len(names):
    raise BassgenError("two inputs share a file name; rename one or sample them separately")
  if not overwrite:
    existing = [p for p in names if p.exists()]
    if existing:
      raise BassgenError(f"{existing[0]}: already exists. Pass --overwrite to replace it, or "
                         "choose another --out folder.")

  # 3. Generate. Compiled programs are cached on disk, so a later process neither traces nor
  # compiles what an earlier one did (bassgen.aot).
  cache = compile_cache.enable()
  programs = aot.ProgramCache(cache / "programs") if cache is not None else None

  gen = BassGenerator.load(checkpoint, programs=programs)
  opts = SampleOptions(guidance=guidance, rescale=rescale,
                       ground_strength=ground_strength, steps=steps,
                       sampler=sampler, seed=seed, num_samples=k)
  items = []
  for i, (f, wav, sr, name, files) in enumerate(plans):
    t0 = time.time()
    print(f"[{i + 1}/{len(plans)}] {f} ({len(wav) / sr:.1f} s)", flush=True)
    basses = gen.generate(wav, sr, style_wav=None if style_audio is None else style_audio[0],
                          style_sample_rate=None if style_audio is None else style_audio[1],
                          options=opts,
                          keep_bass=None if keep is None else audio.resample(keep[0], keep[1], sr),
                          regenerate=region, progress=f"    {name}: sampling")
    final = [p for v in files.values() for p in (v if isinstance(v, list) else [v])]
    summaries = []
    with _staged(out, final, overwrite) as stage:
      audio.save_audio(stage / files["mix"].name, wav, sr)
      for j, bass in enumerate(basses):
        audio.save_audio(stage / files["bass"][j].name, bass, sr)
        audio.save_audio_blocks(stage / files["with_bass"][j].name, _with_bass(wav, bass), sr)
        # One pitch track per bass, for its MIDI, the picture and the page.
        track = transcription.track_bass(bass, sr)
        notes = transcription.transcribe(track)
        notes_lib.notes_to_midi(notes, stage / files["midi"][j].name)
        summaries.append(_summary(track, notes, notes_lib.midi_name))
        if j == 0:
          report.spectrogram_png(stage / files["png"].name, wav, sr, track, notes,
                                 title=f"{name}: mix (top), generated bass's notes and pitch "
                                 "(bottom)")
    items.append({"name": name, "mix": files["mix"].name,
                  "basses": [p.name for p in files["bass"]],
                  "with_bass": [p.name for p in files["with_bass"]],
                  "midi": [p.name for p in files["midi"]], "png": files["png"].name,
                  "summaries": summaries})
    count = sum(len(v) if isinstance(v, list) else 1 for v in files.values())
    print(f"    wrote {files['bass'][0].name} (+{count - 1} files) in "
          f"{time.time() - t0:.1f} s", flush=True)
  settings = (f"checkpoint {checkpoint}; seed {seed}; guidance "
              f"{gen.cfg.sample.guidance_w if guidance is None else guidance}; "
              f"style {style or 'none'}")
  page = report.index_html(out / "index.html", items, settings=settings)
  print(f"results are in {out}/ (open {page})")
  return page
