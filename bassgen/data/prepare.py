"""`bassgen prepare`: resample and downmix a multitrack dataset once, into ArrayRecord files.

  bassgen prepare --layout musdb|slakh|moisesdb|folder --root DIR --out DIR [--sample-rate SR]

Output (one prepared folder = one split):
  OUT/tracks/<track>.array_record   one file per track; record j = segment j of the track
                                    (see `bassgen.data.records`; row 0 is the target stem)
  OUT/index.json                    tracks, stems, durations, sample rate, segment counts, and the
                                    files that were skipped with their reasons

Each track file is written under a temporary name and renamed, and index.json is rewritten
atomically after every track, so an interrupted run leaves no half-written file; re-running skips
the tracks already listed in index.json. A bad file (truncated, empty, unreadable, not audio, stems
of different lengths or rates, no target stem) skips its track with a warning; the run goes on and
ends with a summary of everything skipped.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import hashlib
import json
import multiprocessing
import pathlib
import re
import sys
import time
from typing import Any, Callable

import numpy as np

from bassgen.data import audio
from bassgen.data import records
from bassgen.data import sources
from bassgen.errors import BassgenError

INDEX_NAME = "index.json"
TRACKS_DIR = "tracks"
INDEX_FORMAT = "bassgen-prepared"
INDEX_VERSION = 1
DEFAULT_SAMPLE_RATE = 44100
DEFAULT_SEGMENT_SECONDS = 2.0
# Settings that must match when a run resumes into an existing folder.
_RESUME_KEYS = ("layout", "split", "target", "sample_rate", "segment_samples")


@dataclasses.dataclass
class TrackResult:
  """What preparing one track produced: an index entry, or the reasons it was skipped."""
  name: str
  entry: dict[str, Any] | None = None
  skipped: list[sources.Skipped] = dataclasses.field(default_factory=list)


def track_filename(name: str) -> str:
  """A file name for a track: readable, filesystem-safe and unique (a hash of the full name)."""
  safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:80] or "track"
  digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:8]
  return f"{safe}-{digest}{records.TRACK_SUFFIX}"


def _reason(e: Exception, f: pathlib.Path) -> str:
  """The message of `e` without the leading "PATH: " (the summary shows the path already)."""
  msg = str(e)
  return msg[len(f"{f}: "):] if msg.startswith(f"{f}: ") else msg


def _check_headers(track: sources.Track) -> tuple[int, int] | sources.Skipped:
  """Native (sample rate, frames) shared by all files, or why the track must be skipped."""

  infos = []
  for f in track.files:
    try:
      info = audio.check_complete(f)
    except BassgenError as e:
      return sources.Skipped(track.name, str(f), _reason(e, f))
    if info.frames <= 0:
      return sources.Skipped(track.name, str(f), "empty: the file holds no audio samples")
    infos.append((f, int(info.samplerate), int(info.frames)))
  rates = {sr for _, sr, _ in infos}
  if len(rates) > 1:
    desc = ", ".join(f"{f.name} {sr} Hz" for f, sr, _ in infos)
    return sources.Skipped(track.name, str(infos[0][0].parent),
                           f"stems have different sample rates ({desc})")
  lengths = {n for _, _, n in infos}
  if len(lengths) > 1:
    desc = ", ".join(f"{f.name} {n}" for f, _, n in infos)
    return sources.Skipped(track.name, str(infos[0][0].parent),
                           f"stems have different lengths in samples ({desc})")
  return infos[0][1], infos[0][2]


def _load_sum(track: sources.Track, files: tuple[pathlib.Path, ...], frames: int,
              sample_rate: int) -> np.ndarray | sources.Skipped:
  """Loads, downmixes, checks and sums `files`, then resamples the sum once."""

  total = None
  native_sr = None
  for f in files:
    try:
      wav, native_sr = audio.load_audio(f, None, mono=True)
    except BassgenError as e:
      return sources.Skipped(track.name, str(f), _reason(e, f))
    if wav.shape[0] != frames:
      return sources.Skipped(track.name, str(f), f"truncated: decoded {wav.shape[0]} samples, "
                             f"the header says {frames}")
    total = wav if total is None else total + wav
  return audio.resample(total, native_sr, sample_rate)


def load_track(track: sources.Track,
               sample_rate: int) -> tuple[int, list[np.ndarray]] | sources.Skipped:
  """Checks and reads one track: (native rate, [target, *stems] mono at `sample_rate`), or why not.

  Every file's header is checked first (readable, not truncated, not empty, one rate and one length
  for all stems, judged on the files' native rates), so a bad track costs no decoding.
  """
  checked = _check_headers(track)
  if isinstance(checked, sources.Skipped):
    return checked
  native_sr, frames = checked
  stems_K = []
  for files in (track.target,) + tuple(fs for _, fs in track.stems):
    wav = _load_sum(track, files, frames, sample_rate)
    if isinstance(wav, sources.Skipped):
      return wav
    stems_K.append(wav)
  num_samples = min(w.shape[0] for w in stems_K)
  if num_samples == 0:
    return sources.Skipped(track.name, str(track.target[0]), "empty: no samples after resampling")
  return native_sr, [w[:num_samples] for w in stems_K]


def prepare_track(track: sources.Track, out_path: str, sample_rate: int, segment_samples: int,
                  target_name: str = "bass") -> TrackResult:
  """Reads one track, writes its segments to `out_path` atomically, returns its index entry.

  Record rows follow the entry's `stems` list: the target (named `target_name`) first.
  """
  try:
    loaded = load_track(track, sample_rate)
    if isinstance(loaded, sources.Skipped):
      return TrackResult(track.name, skipped=[loaded])
    native_sr, stems_K = loaded
    num_samples = stems_K[0].shape[0]
    segments = (np.stack([w[start:start + segment_samples] for w in stems_K])
                for start in range(0, num_samples, segment_samples))
    num_segments = records.write_track(out_path, segments)
  except Exception as e:  # pylint: disable=broad-except
    # One track must never end the run; the reason is listed in the summary.
    return TrackResult(track.name, skipped=[sources.Skipped(
        track.name, str(track.target[0].parent), f"failed: {type(e).__name__}: {e}"[:400])])
  entry = {
      "name": track.name,
      "file": f"{TRACKS_DIR}/{pathlib.Path(out_path).name}",
      "stems": [target_name] + [stem_name for stem_name, _ in track.stems],
      "sources": {target_name: [str(f) for f in track.target],
                  **{n: [str(f) for f in fs] for n, fs in track.stems}},
      "native_sample_rate": native_sr,
      "num_samples": int(num_samples),
      "duration_s": round(num_samples / sample_rate, 3),
      "num_segments": num_segments,
  }
  return TrackResult(track.name, entry=entry)


def _load_index(path: pathlib.Path) -> dict[str, Any] | None:
  if not path.exists():
    return None
  try:
    index = json.loads(path.read_text(encoding="utf-8"))
  except (ValueError, UnicodeDecodeError):
    raise BassgenError(f"{path}: not a valid index (broken JSON). Delete it, or prepare into a new "
                       "--out folder.") from None
  if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT:
    raise BassgenError(f"{path}: not a bassgen prepared-data index. Choose another --out folder.")
  return index


def _write_index(out: pathlib.Path, index: dict[str, Any]) -> None:
  audio.atomic_write_text(out / INDEX_NAME, json.dumps(index, indent=1) + "\n", overwrite=True)


def prepare(layout: str, root: str | pathlib.Path, out: str | pathlib.Path, *,
            sample_rate: int = DEFAULT_SAMPLE_RATE, split: str | None = None,
            subset: str = "train", target: str = "bass", target_glob: str | None = None,
            exclude_glob: str | None = "mix.*",
            segment_seconds: float = DEFAULT_SEGMENT_SECONDS, workers: int = 2,
            log: Callable[[str], None] | None = None) -> dict[str, Any]:
  """Prepares (or resumes preparing) one split; returns the final index (also in OUT/index.json).

  Args:
    layout: one of `sources.LAYOUTS`.
    root: the dataset folder.
    out: the prepared folder (created if missing).
    sample_rate: every stem is resampled to this rate and downmixed to mono.
    split: the split name stored in the index (musdb: the subset; others: default "train").
    subset: musdb only: `train` or `test`.
    target, target_glob, exclude_glob: see `sources.scan`.
    segment_seconds: length of one record; training crops may span several records.
    workers: processes that read audio in parallel (1: in this process).
    log: where progress, warnings and the summary go (default: stderr).
  """

  log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
  if sample_rate <= 0:
    raise BassgenError(f"--sample-rate {sample_rate}: must be a positive number of Hz.")
  if segment_seconds <= 0:
    raise BassgenError(f"--segment-seconds {segment_seconds}: must be positive.")
  if layout == "musdb":
    if split not in (None, subset):
      raise BassgenError(f"--split {split}: for MUSDB the split is the subset; "
                         f"use --subset {split}.")
    split = subset
  split = split or "train"
  segment_samples = max(1, int(round(segment_seconds * sample_rate)))
  root = pathlib.Path(root).resolve()  # the index records absolute source paths
  scanned = sources.scan(layout, root, target=target, subset=subset, target_glob=target_glob,
                         exclude_glob=exclude_glob)
  out = audio.check_writable_dir(out)
  tracks_dir = out / TRACKS_DIR
  tracks_dir.mkdir(exist_ok=True)
  for stale in tracks_dir.glob(".*.array_record.*.tmp"):  # left by a killed run
    stale.unlink()

  settings = {"layout": layout, "split": split, "target": target, "sample_rate": int(sample_rate),
              "segment_samples": segment_samples}
  old = _load_index(out / INDEX_NAME)
  done: dict[str, dict[str, Any]] = {}
  if old is not None:
    for key in _RESUME_KEYS:
      if old.get(key) != settings[key]:
        raise BassgenError(
            f"{out / INDEX_NAME}: this folder was prepared with {key}={old.get(key)!r}, not "
            f"{settings[key]!r}. Use the same settings to resume, or choose a new --out folder.")
    done = {e["name"]: e for e in old.get("tracks", []) if (out / e["file"]).is_file()}

  wanted = {t.name for t in scanned.tracks}
  entries = {name: e for name, e in done.items() if name in wanted}
  todo = [t for t in scanned.tracks if t.name not in entries]
  skipped = list(scanned.skipped)
  for s in scanned.skipped:
    log(f"WARNING: skipping track {s.track!r}: {s.reason} ({s.path})")
  index = {"format": INDEX_FORMAT, "version": INDEX_VERSION, **settings,
           "root": str(root)}

  def save() -> None:
    tracks = [entries[n] for n in sorted(entries)]
    index.update(tracks=tracks, num_tracks=len(tracks),
                 total_duration_s=round(sum(e["duration_s"] for e in tracks), 3),
                 skipped=[s.to_json() for s in skipped])
    _write_index(out, index)

  log(f"prepare: {len(scanned.tracks)} tracks found in {root} ({layout}); {len(entries)} already "
      f"prepared, {len(todo)} to do, {len(scanned.skipped)} rejected from metadata")
  save()
  t0 = time.time()
  results = _run_tracks(todo, tracks_dir, sample_rate, segment_samples, target, workers)
  for i, result in enumerate(results):
    if result.entry is not None:
      entries[result.name] = result.entry
      log(f"[{i + 1}/{len(todo)}] {result.name}: {result.entry['duration_s']:.1f} s, "
          f"{len(result.entry['stems'])} stems")
    for s in result.skipped:
      skipped.append(s)
      log(f"WARNING: [{i + 1}/{len(todo)}] skipping track {s.track!r}: {s.reason} ({s.path})")
    save()
  index["summary"] = {"prepared": len(entries) - len(set(done) & wanted),
                      "already_prepared": len(set(done) & wanted), "skipped": len(skipped),
                      "seconds": round(time.time() - t0, 1)}
  save()
  log(format_summary(index))
  return index


def _run_tracks(todo: list[sources.Track], tracks_dir: pathlib.Path, sample_rate: int,
                segment_samples: int, target: str, workers: int):
  """Yields one TrackResult per track as tracks finish (any order)."""
  jobs = [(t, str(tracks_dir / track_filename(t.name)), sample_rate, segment_samples, target)
          for t in todo]
  if workers <= 1 or len(jobs) <= 1:
    for job in jobs:
      yield prepare_track(*job)
    return
  # spawn: the parent may already run JAX threads, which fork does not copy safely.
  ctx = multiprocessing.get_context("spawn")
  with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
    futures = {pool.submit(prepare_track, *job): job[0] for job in jobs}
    for fut in concurrent.futures.as_completed(futures):
      track = futures[fut]
      try:
        yield fut.result()
      except Exception as e:  # pylint: disable=broad-except  # a worker died (e.g. out of memory)
        yield TrackResult(track.name, skipped=[sources.Skipped(
            track.name, str(track.target[0].parent), f"worker failed: {type(e).__name__}: {e}")])


def format_summary(index: dict[str, Any]) -> str:
  """Human-readable end-of-run summary, listing every skipped track and why."""
  summary = index.get("summary", {})
  lines = [f"prepared {index['num_tracks']} tracks ({index['total_duration_s'] / 60:.1f} min at "
           f"{index['sample_rate']} Hz, split {index['split']!r}): "
           f"{summary.get('prepared', 0)} new, {summary.get('already_prepared', 0)} resumed, "
           f"{len(index['skipped'])} skipped"]
  for s in index["skipped"]:
    lines.append(f"  skipped {s['track']!r}: {s['reason']} ({s['path']})")
  return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """Flags of `bassgen prepare`."""
  parser.add_argument("--layout", required=True, choices=sources.LAYOUTS,
                      help="dataset layout of --root")
  parser.add_argument("--root", required=True, help="dataset folder")
  parser.add_argument("--out", required=True,
                      help="prepared folder (one split); resumed if it exists")
  parser.add_argument("--sample-rate", type=int, default=DEFAULT_SAMPLE_RATE,
                      help=f"resample every stem to this rate (default {DEFAULT_SAMPLE_RATE})")
  parser.add_argument("--split", default=None,
                      help="split name stored in the index (default 'train'; musdb: the --subset)")
  parser.add_argument("--subset", default="train", choices=sources.MUSDB_SUBSETS,
                      help="musdb only: which folder of --root to prepare")
  parser.add_argument("--target", default="bass",
                      help="stem to learn (folder/file name; slakh: inst_class) (default bass)")
  parser.add_argument("--target-glob", default=None,
                      help="folder layout: file-name pattern of the target (default TARGET.*)")
  parser.add_argument("--exclude", default="mix.*",
                      help="folder layout: file-name pattern of files that are not stems "
                           "(default mix.*; '' for none)")
  parser.add_argument("--segment-seconds", type=float, default=DEFAULT_SEGMENT_SECONDS,
                      help=f"length of one stored record (default {DEFAULT_SEGMENT_SECONDS})")
  parser.add_argument("--workers", type=int, default=2,
                      help="parallel reader processes (default 2)")


def run(args: argparse.Namespace) -> int:
  """Runs `bassgen prepare`; returns 1 when no track could be prepared."""
  index = prepare(args.layout, args.root, args.out, sample_rate=args.sample_rate,
                  split=args.split, subset=args.subset, target=args.target,
                  target_glob=args.target_glob, exclude_glob=args.exclude or None,
                  segment_seconds=args.segment_seconds, workers=args.workers)
  if not index["tracks"]:
    print(f"error: no usable track in {args.root}; see the skipped list above.", file=sys.stderr)
    return 1
  return 0
