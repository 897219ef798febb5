"""`bassgen render`: an offline multitrack dataset of procedural songs or Bach chorales.

    bassgen render --num-songs 300 --out data/renders/train --seed 0 --sample-rate 16000
    bassgen render --source chorales --split train --out data/renders/train --sample-rate 16000

Each track is a folder `OUT/<name>/` holding one mono 16-bit WAV per stem (`bass.wav`, `drums.wav`,
`keys.wav`, ...), `mix.wav` (the sum of the stems), `song.mid` (all parts) and `song.json` (tempo,
key, chords, bass notes with times in seconds, programs, gains). It is the "folder" layout of
`bassgen prepare`. Stems are dry (no reverb or chorus sends; see `synth`), levelled to a random
loudness per stem, and the whole song is scaled so the mix never clips. A folder is built under a hidden temporary name and renamed when complete, with
`song.json` written last; re-running into the same folder skips finished tracks.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import os
import pathlib
import shutil
import time
import zlib

import numpy as np

from bassgen.data import audio, synth
from bassgen.errors import BassgenError

DEFAULT_SAMPLE_RATE = 44100
MIX_PEAK = 0.99
# Target RMS level (dBFS over the stem's active frames) and random spread per stem.
_LEVELS_DB = {"bass": (-20.0, 2.5), "drums": (-19.0, 3.0)}
_OTHER_LEVEL_DB = (-23.0, 4.0)


@dataclasses.dataclass(frozen=True)
class Result:
  """What happened to one track."""
  name: str
  path: str | None
  status: str  # 'rendered', 'skipped' (already finished) or 'no_bass'
  audio_s: float = 0.0
  cpu_s: float = 0.0


def _active_rms(wav_S: np.ndarray, frame: int = 1024) -> float:
  """RMS over the frames within 40 dB of the loudest frame (0 for silence)."""
  n = wav_S.shape[0] // frame * frame
  if n == 0:
    return float(np.sqrt(np.mean(wav_S ** 2))) if wav_S.size else 0.0
  power = np.mean(wav_S[:n].reshape(-1, frame).astype(np.float64) ** 2, axis=1)
  if power.max() <= 0:
    return 0.0
  return float(np.sqrt(power[power >= power.max() * 1e-4].mean()))


def _quantize(wav: np.ndarray) -> np.ndarray:
  """Rounds to the 16-bit grid so the written mix is exactly the sum of the written stems."""
  return (np.clip(np.round(wav * 32768.0), -32768, 32767) / 32768.0).astype(np.float32)


def mix_stems(stems: dict[str, np.ndarray], rng: np.random.Generator):
  """Levels each stem to a random target, then scales the song so no sample exceeds MIX_PEAK.

  Returns (stems after gain, mix, per-stem gains before the song scale, song scale); stems and mix
  lie on the 16-bit grid and mix == sum(stems) up to one rounding of the mix.
  """
  gains = {}
  for name, wav in stems.items():
    mean_db, spread = _LEVELS_DB.get(name, _OTHER_LEVEL_DB)
    target = 10 ** ((mean_db + rng.uniform(-spread, spread)) / 20)
    rms = _active_rms(wav)
    gains[name] = float(target / rms) if rms > 1e-6 else 1.0
  levelled = {k: v * gains[k] for k, v in stems.items()}
  mix = np.sum(list(levelled.values()), axis=0)
  peak = max([float(np.abs(mix).max())] + [float(np.abs(v).max()) for v in levelled.values()])
  # Leave room for the rounding of each stem so the written mix stays within MIX_PEAK.
  scale = min(1.0, (MIX_PEAK - len(stems) / 32768) / peak) if peak > 0 else 1.0
  out = {k: _quantize(v * scale) for k, v in levelled.items()}
  mix = _quantize(np.sum(list(out.values()), axis=0))
  return out, mix, gains, scale


@functools.lru_cache(maxsize=2)
def _soundfont_id(data: bytes) -> str:
  return hashlib.sha1(data).hexdigest()


def song_json(song, *, sample_rate: int, num_samples: int, gains: dict, scale: float,
              soundfont_name: str, soundfont_sha1: str) -> dict:
  """The metadata written as song.json (times in seconds, pitches as MIDI note numbers)."""
  import bassgen  # pylint: disable=g-import-not-at-top

  extra = {k: v for k, v in song.meta.items() if k not in ("source", "seed", "programs")}
  return {
      "name": song.name,
      "source": song.meta["source"],
      "seed": song.meta["seed"],
      "tempo": song.tempo,
      "key": song.key,
      "time_signature": f"{song.time_signature[0]}/{song.time_signature[1]}",
      "duration": num_samples / sample_rate,
      "sample_rate": sample_rate,
      "num_samples": num_samples,
      "stems": [p.name for p in song.parts],
      "programs": song.meta["programs"],
      "gains": {k: round(v, 6) for k, v in gains.items()},  # per stem, before `scale`
      "scale": round(scale, 6),  # applied to every stem so the mix peak stays <= MIX_PEAK
      "bass_patterns": sorted({s["pattern"] for s in song.bass_sections} - {"ending"}),
      "bass_sections": song.bass_sections,
      "chords": song.chords,
      "bass_notes": [{"start": n.start, "end": n.end, "pitch": n.pitch, "velocity": n.velocity}
                     for n in song.bass.notes],
      **extra,
      "soundfont": soundfont_name,
      "soundfont_sha1": soundfont_sha1,
      "bassgen_version": bassgen.__version__,
  }


def _clear_partials(out_dir: pathlib.Path, name: str) -> None:
  """Removes temporary folders of `name` left by runs that died (their process is gone)."""
  for d in out_dir.glob(f".{name}.partial-*"):
    try:
      os.kill(int(d.name.rsplit("-", 1)[1]), 0)
      continue  # that process is still running
    except (ValueError, ProcessLookupError):
      shutil.rmtree(d, ignore_errors=True)
    except PermissionError:
      continue


def write_track(song, out_dir: pathlib.Path, *, sample_rate: int, soundfont: str | None) -> Result:
  """Renders every stem of `song` and writes its folder (skipped when already finished)."""

  final = out_dir / song.name
  if (final / "song.json").is_file():
    return Result(song.name, str(final), "skipped")
  if final.exists():
    raise BassgenError(f"{final}: exists but holds no song.json, so it is not a finished render. "
                       "Delete that folder and run again, or choose another --out folder.")
  sf2 = synth.load_soundfont(soundfont)
  stems = synth.render_parts(song.parts, tempo=song.tempo, end_time=song.duration,
                             sample_rate=sample_rate, soundfont=sf2,
                             time_signature=song.time_signature)
  rng = np.random.default_rng([zlib.crc32(song.name.encode()), int(song.meta.get("seed", 0))])
  stems, mix, gains, scale = mix_stems(stems, rng)
  num_samples = mix.shape[0]
  sf_path = pathlib.Path(soundfont) if soundfont else synth.default_soundfont_path()
  meta = song_json(song, sample_rate=sample_rate, num_samples=num_samples, gains=gains, scale=scale,
                   soundfont_name=sf_path.name, soundfont_sha1=_soundfont_id(sf2))
  midi = synth.midi_bytes(song.parts, tempo=song.tempo, end_time=song.duration,
                          time_signature=song.time_signature)

  _clear_partials(out_dir, song.name)
  tmp = out_dir / f".{song.name}.partial-{os.getpid()}"
  tmp.mkdir()
  try:
    for name, wav in stems.items():
      audio.save_audio(tmp / f"{name}.wav", wav, sample_rate, subtype="PCM_16")
    audio.save_audio(tmp / "mix.wav", mix, sample_rate, subtype="PCM_16")
    audio.atomic_write_bytes(tmp / "song.mid", midi)
    audio.atomic_write_text(tmp / "song.json", json.dumps(meta, indent=1) + "\n")
    os.rename(tmp, final)
  except OSError:
    shutil.rmtree(tmp, ignore_errors=True)
    if (final / "song.json").is_file():  # another run finished it first
      return Result(song.name, str(final), "skipped")
    raise
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return Result(song.name, str(final), "rendered", audio_s=num_samples / sample_rate)


def _job(job: tuple) -> Result:
  """One track in a worker: compose (or read) the song, render, write. Picklable by name."""
  kind, key, seed, out_dir, sample_rate, soundfont = job
  out_dir = pathlib.Path(out_dir)
  t0 = time.process_time()
  if kind == "song":
    from bassgen.data import render_songs as rs  # pylint: disable=g-import-not-at-top
    name = rs.song_name(seed, key)
    if (out_dir / name / "song.json").is_file():
      return Result(name, str(out_dir / name), "skipped")
    song = rs.compose_song(seed, key)
  else:
    from bassgen.data import render_chorales as rc  # pylint: disable=g-import-not-at-top
    name = rc.chorale_name(key)
    if (out_dir / name / "song.json").is_file():
      return Result(name, str(out_dir / name), "skipped")
    try:
      song = rc.compose_chorale(key, seed=seed)
    except rc.NoBassPart:
      return Result(name, None, "no_bass")
  result = write_track(song, out_dir, sample_rate=sample_rate, soundfont=soundfont)
  return dataclasses.replace(result, cpu_s=time.process_time() - t0)


def _check(out_dir, sample_rate, soundfont, workers) -> tuple[pathlib.Path, int]:

  if not 8000 <= int(sample_rate) <= 192000:
    raise BassgenError(f"--sample-rate {sample_rate}: choose a rate between 8000 and 192000 Hz.")
  synth.load_soundfont(soundfont)  # fails early on a bad --soundfont
  workers = (os.cpu_count() or 1) if workers is None else int(workers)
  if workers < 1:
    raise BassgenError(f"--workers {workers}: give at least 1.")
  return audio.check_writable_dir(out_dir), workers


def _run_jobs(jobs: list[tuple], workers: int, progress: bool, desc: str) -> list[Result]:
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top

  bar = tqdm(total=len(jobs), desc=desc, unit="track", disable=not progress, smoothing=0.05)
  results: list[Result | None] = [None] * len(jobs)
  if workers == 1 or len(jobs) <= 1:
    for i, job in enumerate(jobs):
      results[i] = _job(job)
      bar.update()
  else:
    import concurrent.futures as cf  # pylint: disable=g-import-not-at-top
    import multiprocessing as mp  # pylint: disable=g-import-not-at-top
    with cf.ProcessPoolExecutor(min(workers, len(jobs)), mp_context=mp.get_context("spawn")) as ex:
      futures = {ex.submit(_job, job): i for i, job in enumerate(jobs)}
      try:
        for f in cf.as_completed(futures):
          results[futures[f]] = f.result()
          bar.update()
      except BaseException:
        for f in futures:
          f.cancel()
        raise
  bar.close()
  return results


def render_songs_results(out_dir, num_songs: int, *, seed: int, sample_rate: int = DEFAULT_SAMPLE_RATE,
                         soundfont=None, workers: int | None = None,
                         progress: bool = False) -> list[Result]:
  """Like `render_songs`, returning one Result per song (status, audio and CPU seconds)."""
  if int(num_songs) < 0 or int(seed) < 0:
    raise BassgenError(f"--num-songs {num_songs} / --seed {seed}: give non-negative integers.")
  out_dir, workers = _check(out_dir, sample_rate, soundfont, workers)
  sf = str(soundfont) if soundfont else None
  jobs = [("song", i, int(seed), str(out_dir), int(sample_rate), sf) for i in range(int(num_songs))]
  return _run_jobs(jobs, workers, progress, f"songs -> {out_dir}")


def render_songs(out_dir, num_songs: int, *, seed: int, sample_rate: int = DEFAULT_SAMPLE_RATE,
                 soundfont=None, workers: int | None = None, progress: bool = False
                 ) -> list[pathlib.Path]:
  """Renders procedural songs 0..num_songs-1 of `seed` into `out_dir`; returns their folders."""
  results = render_songs_results(out_dir, num_songs, seed=seed, sample_rate=sample_rate,
                                 soundfont=soundfont, workers=workers, progress=progress)
  return [pathlib.Path(r.path) for r in results if r.path]


def render_chorales_results(out_dir, *, split: str = "all", sample_rate: int = DEFAULT_SAMPLE_RATE,
                            soundfont=None, workers: int | None = None, limit: int | None = None,
                            seed: int = 0, progress: bool = False) -> list[Result]:
  """Like `render_chorales`, returning one Result per chorale."""
  from bassgen.data import render_chorales as rc  # pylint: disable=g-import-not-at-top

  if split not in rc.SPLITS:
    raise BassgenError(f"--split {split}: choose one of {', '.join(rc.SPLITS)}.")
  if limit is not None and int(limit) < 0:
    raise BassgenError(f"--limit {limit}: give a non-negative number of chorales.")
  out_dir, workers = _check(out_dir, sample_rate, soundfont, workers)
  paths = rc.split_chorales(split)[:None if limit is None else int(limit)]
  sf = str(soundfont) if soundfont else None
  jobs = [("chorale", p, int(seed), str(out_dir), int(sample_rate), sf) for p in paths]
  return _run_jobs(jobs, workers, progress, f"chorales ({split}) -> {out_dir}")


def render_chorales(out_dir, *, split: str = "all", sample_rate: int = DEFAULT_SAMPLE_RATE,
                    soundfont=None, workers: int | None = None, limit: int | None = None,
                    seed: int = 0, progress: bool = False) -> list[pathlib.Path]:
  """Renders the Bach chorales of `split` (the first `limit`) into `out_dir`; returns their folders.

  Chorales without a Bass part are left out.
  """
  results = render_chorales_results(out_dir, split=split, sample_rate=sample_rate,
                                    soundfont=soundfont, workers=workers, limit=limit, seed=seed,
                                    progress=progress)
  return [pathlib.Path(r.path) for r in results if r.path]


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """Options of `bassgen render`."""
  parser.add_argument("--out", required=True, help="output folder (one sub-folder per track)")
  parser.add_argument("--source", choices=("songs", "chorales"), default="songs",
                      help="procedural songs (default) or Bach chorales from the music21 corpus")
  parser.add_argument("--num-songs", type=int, default=None,
                      help="number of procedural songs (required for --source songs)")
  parser.add_argument("--seed", type=int, default=0,
                      help="song i depends on (seed, i) only; a new seed gives new songs")
  parser.add_argument("--sample-rate", type=int, default=DEFAULT_SAMPLE_RATE,
                      help=f"output sample rate in Hz (default {DEFAULT_SAMPLE_RATE})")
  parser.add_argument("--soundfont", default=None,
                      help="General MIDI .sf2 file (default: pretty_midi's TimGM6mb.sf2)")
  parser.add_argument("--split", choices=("train", "test", "all"), default="all",
                      help="chorales only: every 10th chorale (sorted by corpus path) is 'test'")
  parser.add_argument("--limit", type=int, default=None,
                      help="chorales only: render at most this many")
  parser.add_argument("--workers", type=int, default=None,
                      help="parallel processes (default: number of CPUs)")


def run(args: argparse.Namespace) -> int:
  """Entry point of `bassgen render`."""
  t0 = time.time()
  if args.source == "songs":
    if args.num_songs is None:
      raise BassgenError("bassgen render: --num-songs N is required with --source songs.")
    results = render_songs_results(args.out, args.num_songs, seed=args.seed,
                                   sample_rate=args.sample_rate, soundfont=args.soundfont,
                                   workers=args.workers, progress=True)
  else:
    results = render_chorales_results(args.out, split=args.split, sample_rate=args.sample_rate,
                                      soundfont=args.soundfont, workers=args.workers,
                                      limit=args.limit, seed=args.seed, progress=True)
  count = {s: sum(r.status == s for r in results) for s in ("rendered", "skipped", "no_bass")}
  audio_s = sum(r.audio_s for r in results)
  cpu_s = sum(r.cpu_s for r in results)
  speed = f", {audio_s / cpu_s:.0f}x real time per core" if cpu_s > 0 else ""
  print(f"{args.out}: rendered {count['rendered']} tracks ({audio_s / 60:.1f} min of audio{speed}), "
        f"skipped {count['skipped']} already finished"
        + (f", left out {count['no_bass']} without a Bass part" if count["no_bass"] else "")
        + f", in {time.time() - t0:.0f} s.")
  return 0
