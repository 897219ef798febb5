"""The latent cache for diffusion training, and its Grain pipeline.

`cache_latents` encodes a prepared dataset once with a trained autoencoder: for every track, K
random mixes (a random subset of the non-target stems with random gains: the pipeline's mixing
rule, over the whole track) and the target stem, plus each mix's pitch-class profile on the
latent frame grid (`Codec.chroma`, the extra condition of `model.mix_chroma`). Latents are normalised with the autoencoder's
statistics and stored as float16 in one ArrayRecord file per track (written under a temporary name
and renamed; a re-run skips finished tracks, so an interrupted build resumes), plus `latents.json`,
written last: a folder without it is an unfinished build.

`make_latent_train_dataset` then reads random fixed-length crops of (mix latent, bass latent)
pairs with a deterministic shuffle, per-process sharding and an exact-resume iterator state.
"""
from __future__ import annotations

import io
import json
import os
import pathlib
import threading
from typing import Any, Callable, Sequence

import numpy as np

from bassgen.data import labels, pipeline, records
from bassgen.evaluation import pitch as transcription
from bassgen.data.audio import atomic_write_text
from bassgen.errors import BassgenError
from bassgen.models import harmony

INDEX_NAME = "latents.json"


def _encode_record(mix_LxC: np.ndarray, target_LxC: np.ndarray, level_L: np.ndarray,
                   chroma_Lx12: np.ndarray, labels_L: np.ndarray, onsets_L: np.ndarray) -> bytes:
  return _encode_arrays(dict(mix=mix_LxC.astype(np.float16), target=target_LxC.astype(np.float16),
                             level=level_L.astype(np.float32),
                             chroma=chroma_Lx12.astype(np.float16),
                             labels=labels_L.astype(np.int8), onsets=onsets_L.astype(np.int8)))


def _encode_arrays(arrays: dict[str, np.ndarray]) -> bytes:
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  return buf.getvalue()


# numpy parses .npy headers with ast.literal_eval, which CPython 3.11 does not make thread-safe
# ("SystemError: AST constructor recursion depth mismatch" under Grain's reader threads).
_NPZ_LOCK = threading.Lock()


def decode_record(data: bytes) -> dict[str, np.ndarray]:
  with _NPZ_LOCK, np.load(io.BytesIO(data), allow_pickle=False) as f:
    out = {"mix": f["mix"].astype(np.float32), "target": f["target"].astype(np.float32),
           "level": f["level"]}
    if "chroma" in f.files:  # caches written before the chroma condition existed lack it
      out["chroma"] = f["chroma"].astype(np.float32)
    if "labels" in f.files:  # ... and before the harmony pathway, its labels
      out["labels"] = f["labels"].astype(np.int32)
    if "onsets" in f.files:  # ... and before the onset channel (`add_onsets` adds them)
      out["onsets"] = f["onsets"].astype(np.int32)
    return out


def _score_notes(track: dict) -> list[dict] | None:
  """The score's bass notes of a prepared track whose target stem sits beside a song.json."""
  for f in (track.get("sources") or {}).get(track["stems"][0] if track.get("stems") else "", []):
    notes = labels.read_bass_notes(pathlib.Path(f).parent / "song.json")
    if notes is not None:
      return notes
  return None


def track_labels(track: dict, target_S: np.ndarray, sample_rate: int, num_frames: int,
                 frames_per_second: float) -> tuple[np.ndarray, str]:
  """(per-latent-frame bass pitch-class labels, where they came from) for a prepared track: the
  score's bass notes when the target stem sits beside a render's song.json, else the tracked
  pitch of the target stem."""
  notes = _score_notes(track)
  if notes is not None:
    return labels.labels_from_notes(notes, num_frames, frames_per_second), "score"
  pt = transcription.track_pitch(target_S, sample_rate)
  return labels.labels_from_f0(pt.times, pt.f0_hz, num_frames, frames_per_second), "tracked"


def track_onsets(track: dict, labels_L: np.ndarray, frames_per_second: float) -> np.ndarray:
  """Per-latent-frame bass note starts of a prepared track (`model.harmony.onsets`): the score's
  note starts for a render, else where the tracked labels start or change (`track_labels`)."""
  notes = _score_notes(track)
  if notes is not None:
    return labels.onsets_from_notes(notes, len(labels_L), frames_per_second)
  return labels.onsets_from_labels(labels_L)


def frame_levels_db(wav_S: np.ndarray, samples_per_frame: int, num_frames: int) -> np.ndarray:
  """RMS level (dBFS) of the audio under each latent frame."""
  padded = np.zeros(num_frames * samples_per_frame, np.float32)
  n = min(len(wav_S), len(padded))
  padded[:n] = wav_S[:n]
  power = np.mean(padded.reshape(num_frames, samples_per_frame) ** 2, axis=1)
  return 10.0 * np.log10(np.maximum(power, 1e-20))


def cache_latents(codec, prepared_dir: str | pathlib.Path, out_dir: str | pathlib.Path, *,
                  mixes_per_track: int = 4, seed: int = 0,
                  gain_db_range: Sequence[float] = (-9.0, 3.0), log=print,
                  should_stop: Callable[[], bool] | None = None,
                  shard: tuple[int, int] = (0, 1)) -> dict[str, Any] | None:
  """Encodes every track of `prepared_dir` into `out_dir`. Returns the latents index.

  `should_stop()` is asked before each track still to encode (a preemption notice): when it says
  yes, the build stops at that track boundary and returns None without writing the index; calling
  again encodes only the tracks that are missing.

  `shard=(i, n)`: encode only tracks i, i + n, i + 2n... (process i of n builds its share of one
  cache in parallel with the others); the index is written by `finish_cache` once every track is
  there, here only when n == 1. With n > 1 it returns None.
  """
  prepared_dir, out_dir = pathlib.Path(prepared_dir), pathlib.Path(out_dir)
  index = pipeline.read_index(prepared_dir)
  if int(index["sample_rate"]) != codec.sample_rate:
    raise BassgenError(f"{prepared_dir}: prepared at {index['sample_rate']} Hz but the autoencoder "
                       f"works at {codec.sample_rate} Hz. Prepare the data with --sample-rate "
                       f"{codec.sample_rate}.")
  (out_dir / "tracks").mkdir(parents=True, exist_ok=True)
  shard_index, shard_count = shard
  for i, track in enumerate(index["tracks"]):
    name = pathlib.Path(track["file"]).stem
    path = out_dir / "tracks" / f"{name}.array_record"
    num_frames = codec.num_latent_frames(int(track["num_samples"]))
    if i % shard_count == shard_index and not path.is_file():
      if should_stop is not None and should_stop():
        log(f"stopped before track {i + 1}/{len(index['tracks'])} ({name}); the next run "
            "continues from there")
        return None
      stems_KxS = np.concatenate(records.read_track(prepared_dir / track["file"]), axis=1)
      target_S, others_KxS = stems_KxS[0], stems_KxS[1:]
      z_target = codec.encode(target_S)
      level = frame_levels_db(target_S, codec.samples_per_latent, num_frames)
      fps = codec.sample_rate / codec.samples_per_latent
      labels_L, _ = track_labels(track, target_S, codec.sample_rate, num_frames, fps)
      onsets_L = track_onsets(track, labels_L, fps)
      rng = np.random.default_rng([seed, i])
      payloads = []
      for _ in range(mixes_per_track):
        mix_S, _ = pipeline.mix_stems(others_KxS, rng, gain_db_range)
        payloads.append(_encode_record(codec.encode(mix_S), z_target, level, codec.chroma(mix_S),
                                       labels_L, onsets_L))
      _write_track(path, payloads)
      log(f"[{i + 1}/{len(index['tracks'])}] {name}: {num_frames} latent frames x "
          f"{mixes_per_track} mixes")
  return finish_cache(codec, prepared_dir, out_dir, mixes_per_track) if shard_count == 1 else None


def _write_track(path: pathlib.Path, payloads: Sequence[bytes]) -> None:
  """One track's records, written under a temporary name and renamed (never half a file)."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  tmp = path.with_name(f".{path.name}.tmp")
  writer = array_record_module.ArrayRecordWriter(str(tmp), "group_size:1")
  for p in payloads:
    writer.write(p)
  writer.close()
  os.replace(tmp, path)


def add_onsets(prepared_dir: str | pathlib.Path, out_dir: str | pathlib.Path,
               log=print) -> dict[str, Any]:
  """Adds the bass onset channel to a cache written before it existed, without encoding again:
  each track's records are rewritten (atomically, one track at a time) with `track_onsets` of its
  prepared track, then the index is marked. Interrupted, a re-run skips tracks that have them."""
  import grain  # pylint: disable=g-import-not-at-top
  prepared_dir, out_dir = pathlib.Path(prepared_dir), pathlib.Path(out_dir)
  index = read_latent_index(out_dir)
  tracks = {pathlib.Path(t["file"]).stem: t for t in pipeline.read_index(prepared_dir)["tracks"]}
  for i, entry in enumerate(index["tracks"]):
    if entry["name"] not in tracks:
      raise BassgenError(f"{out_dir}: track {entry['name']} is not in {prepared_dir}; the onsets "
                         "come from the prepared data the cache was built from. Delete the "
                         "cache folder to rebuild it.")
    path = out_dir / entry["file"]
    source = grain.sources.ArrayRecordDataSource([str(path)])
    with _NPZ_LOCK:
      raw = [dict(np.load(io.BytesIO(source[j]), allow_pickle=False)) for j in range(len(source))]
    if all("onsets" in r for r in raw):
      continue
    if "labels" not in raw[0]:
      raise BassgenError(f"{path}: this cache predates the harmony labels; delete the cache "
                         "folder so the trainer rebuilds it.")
    onsets = track_onsets(tracks[entry["name"]], raw[0]["labels"].astype(np.int32),
                          index["frames_per_second"])
    del source
    _write_track(path, [_encode_arrays(dict(r, onsets=onsets)) for r in raw])
    log(f"[{i + 1}/{len(index['tracks'])}] {entry['name']}: {int(onsets.sum())} bass onsets")
  index["onsets"] = True
  atomic_write_text(out_dir / INDEX_NAME, json.dumps(index, indent=1), overwrite=True)
  return index


def finish_cache(codec, prepared_dir: str | pathlib.Path, out_dir: str | pathlib.Path,
                 mixes_per_track: int) -> dict[str, Any] | None:
  """Writes the latents index of `out_dir` once every track of `prepared_dir` is encoded there
  (returns it); None while some are missing."""
  prepared_dir, out_dir = pathlib.Path(prepared_dir), pathlib.Path(out_dir)
  entries = []
  for track in pipeline.read_index(prepared_dir)["tracks"]:
    name = pathlib.Path(track["file"]).stem
    if not (out_dir / "tracks" / f"{name}.array_record").is_file():
      return None
    entries.append({"name": name, "file": f"tracks/{name}.array_record",
                    "num_frames": codec.num_latent_frames(int(track["num_samples"])),
                    "num_records": mixes_per_track})
  out = {"format": "bassgen-latents", "source": str(prepared_dir), "sample_rate": codec.sample_rate,
         "latent_channels": codec.latent_channels, "frames_per_second":
         codec.sample_rate / codec.samples_per_latent, "onsets": True, "tracks": entries}
  atomic_write_text(out_dir / INDEX_NAME, json.dumps(out, indent=1), overwrite=True)
  return out


def read_latent_index(latent_dir: str | pathlib.Path) -> dict[str, Any]:
  path = pathlib.Path(latent_dir) / INDEX_NAME
  if not path.is_file():
    raise BassgenError(f"{path}: missing. Build the latent cache first (the LDM trainer does it "
                       "from data.train_dir and the autoencoder checkpoint).")
  index = json.loads(path.read_text())
  if index.get("format") != "bassgen-latents" or not index.get("tracks"):
    raise BassgenError(f"{path}: not a bassgen latent cache. Delete the folder to rebuild it.")
  return index


class LatentCrop:
  """Record id -> a random crop {'mix', 'target': float32[crop_frames, C]} (bass-silent crops are
  redrawn up to `max_tries` times). With `with_chroma`, 'mix' is the condition of a
  `model.mix_chroma` U-Net: the mix latent followed by the mix's 12 pitch-class channels; with
  `with_harmony` the teacher's 12 held one-hot bass pitch-class channels follow ('labels' joins
  the crop), and with `with_onsets` one more channel, 1 where a bass note starts ('onsets')."""

  def __init__(self, latent_dir: str | pathlib.Path, *, crop_frames: int,
               silence_threshold_db: float | None, max_tries: int = 10, with_chroma: bool = False,
               with_harmony: bool = False, with_onsets: bool = False):
    self.latent_dir = pathlib.Path(latent_dir)
    index = read_latent_index(self.latent_dir)
    self.paths = [f"{self.latent_dir / t['file']}[0:{t['num_records']}]" for t in index["tracks"]]
    self.num_records = sum(t["num_records"] for t in index["tracks"])
    self.crop_frames = int(crop_frames)
    self.silence_threshold_db = silence_threshold_db
    self.max_tries = max(1, int(max_tries))
    self.with_chroma = bool(with_chroma)
    self.with_harmony = bool(with_harmony)
    if self.with_harmony and not self.with_chroma:
      raise BassgenError("model.harmony needs model.mix_chroma (the head reads the mix chroma); "
                         "set --config.model.mix_chroma=True.")
    self.with_onsets = bool(with_onsets)
    if self.with_onsets and not self.with_harmony:
      raise BassgenError("model.harmony.onsets needs model.harmony.enabled=True.")
    if self.with_onsets and not index.get("onsets"):
      raise BassgenError(f"{self.latent_dir}: this latent cache has no bass onsets (it predates "
                         "model.harmony.onsets). The LDM trainer adds them when it starts "
                         "(latents.add_onsets), or delete the folder to rebuild it.")
    self._source = None

  def __getstate__(self):
    state = self.__dict__.copy()
    state["_source"] = None
    return state

  def record(self, element: int) -> dict[str, np.ndarray]:
    if self._source is None:
      import grain  # pylint: disable=g-import-not-at-top
      self._source = grain.sources.ArrayRecordDataSource(self.paths)
    rec = decode_record(self._source[int(element)])
    if self.with_chroma:
      if "chroma" not in rec:
        raise BassgenError(f"{self.latent_dir}: this latent cache has no mix chroma (it predates "
                           "model.mix_chroma). Delete the folder so the trainer rebuilds it, or "
                           "train with --config.model.mix_chroma=False.")
      rec["mix"] = np.concatenate([rec["mix"], rec["chroma"]], axis=-1)
    if self.with_harmony:
      if "labels" not in rec:
        raise BassgenError(f"{self.latent_dir}: this latent cache has no bass pitch-class labels "
                           "(it predates model.harmony). Delete the folder so the trainer "
                           "rebuilds it, or train with --config.model.harmony.enabled=False.")
      rec["mix"] = np.concatenate([rec["mix"], harmony.teacher_channels(rec["labels"])], axis=-1)
    if self.with_onsets:
      rec["mix"] = np.concatenate([rec["mix"], rec["onsets"][:, None].astype(np.float32)], -1)
    return rec

  def crop(self, rec: dict[str, np.ndarray], start: int) -> dict[str, np.ndarray]:
    out = {}
    for k in ("mix", "target"):
      x = rec[k][start: start + self.crop_frames]
      if x.shape[0] < self.crop_frames:
        x = np.pad(x, ((0, self.crop_frames - x.shape[0]), (0, 0)))
      out[k] = x
    if self.with_harmony:
      y = rec["labels"][start: start + self.crop_frames]
      out["labels"] = np.pad(y, (0, self.crop_frames - len(y)), constant_values=harmony.NUM_PC)
    if self.with_onsets:
      y = rec["onsets"][start: start + self.crop_frames]
      out["onsets"] = np.pad(y, (0, self.crop_frames - len(y)))
    return out

  def __call__(self, element: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    rec = self.record(element)
    max_start = max(rec["mix"].shape[0] - self.crop_frames, 0)
    start, _ = pipeline.redraw_silent(
        lambda attempt: int(rng.integers(max_start + 1)),
        lambda start: (float(np.mean(rec["level"][start: start + self.crop_frames])), None),
        self.max_tries, self.silence_threshold_db)
    return self.crop(rec, start)


def make_latent_train_dataset(latent_dir: str | pathlib.Path, *, crop_frames: int,
                              batch_size: int, seed: int, silence_threshold_db: float | None = -50.0,
                              shard_index: int | None = None, shard_count: int | None = None,
                              with_chroma: bool = False, with_harmony: bool = False,
                              with_onsets: bool = False):
  """Infinite shuffled batches {'mix', 'target': float32[B, crop_frames, C]} of this process: its
  rows of each global batch of B x shard_count (see `pipeline.process_batches`), so the iterator's
  state, the number of global batches read, resumes on any number of processes."""
  shard_index, shard_count = pipeline.process_shard(shard_index, shard_count)
  cropper = LatentCrop(latent_dir, crop_frames=crop_frames,
                       silence_threshold_db=silence_threshold_db, with_chroma=with_chroma,
                       with_harmony=with_harmony, with_onsets=with_onsets)
  return pipeline.train_stream(cropper, batch_size, seed, shard_index,
                               shard_count).to_iter_dataset()


def make_latent_eval_batches(latent_dir: str | pathlib.Path, *, crop_frames: int, batch_size: int,
                             num_examples: int, seed: int = 0,
                             silence_threshold_db: float | None = -50.0,
                             with_chroma: bool = False, with_harmony: bool = False,
                             with_onsets: bool = False) -> list[dict[str, np.ndarray]]:
  """A fixed list of validation batches (same examples every call): this process's rows of each
  global batch, which do not depend on the number of processes."""
  shard_index, shard_count = pipeline.process_shard()
  cropper = LatentCrop(latent_dir, crop_frames=crop_frames,
                       silence_threshold_db=silence_threshold_db, with_chroma=with_chroma,
                       with_harmony=with_harmony, with_onsets=with_onsets)
  total = max(batch_size * shard_count, (num_examples // (batch_size * shard_count))
              * batch_size * shard_count)
  return list(pipeline.eval_stream(cropper, batch_size, seed, total, shard_index,
                                   shard_count).to_iter_dataset())
