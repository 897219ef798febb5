"""Grain input pipeline over a prepared folder (see `bassgen.data.prepare`).

One training example:
  1. a random crop of `crop_samples` from one track: the shuffled element is one stored segment, and
     the crop starts inside it (anywhere in the track if the segment is too close to the end), so
     every second of audio is about equally likely; crops may span several segments, and a track
     shorter than the crop is zero-padded;
  2. if the target's RMS in the crop is below `silence_threshold_db`, another random crop of the
     same track is drawn (deterministically), up to `max_crop_tries`; then the loudest try is kept,
     so a silent track cannot stall the loop;
  3. the mix is a random subset (1 to all) of the track's non-target stems, each scaled by a gain
     drawn uniformly in dB from `gain_db_range`, summed; the target is the target stem of the same
     crop, unscaled.

Sharding across processes: there is one global stream of examples (shuffled, the shuffle re-drawn
every epoch; the random crop and mix of each depend only on the seed and its position), cut into
global batches of batch_size x n for n processes. Process i reads only rows [i*B, (i+1)*B) of each
global batch, which is where `jax.make_array_from_process_local_data` puts them. So the global
batch, and the whole training run, do not depend on the number of processes, and the iterator's
state (the number of global batches read, the same in every process) resumes exactly, on any
process count (see `process_batches`).
"""
from __future__ import annotations

import json
import pathlib
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from bassgen.data import records
from bassgen.errors import BassgenError

if TYPE_CHECKING:
  import grain

INDEX_NAME = "index.json"
_SILENCE_FLOOR_DB = -200.0


def read_index(data_dir: str | pathlib.Path) -> dict[str, Any]:
  """Loads and checks `data_dir/index.json` written by `bassgen prepare`."""
  data_dir = pathlib.Path(data_dir)
  path = data_dir / INDEX_NAME
  if not path.is_file():
    raise BassgenError(f"{path}: missing. Run `bassgen prepare --out {data_dir} ...` first, or "
                       "give the folder that `bassgen prepare` wrote.")
  try:
    index = json.loads(path.read_text(encoding="utf-8"))
  except (ValueError, UnicodeDecodeError):
    raise BassgenError(f"{path}: broken JSON. Re-run `bassgen prepare` into this folder.") from None
  if not isinstance(index, dict) or index.get("format") != "bassgen-prepared":
    raise BassgenError(f"{path}: not a bassgen prepared-data index. Give a folder written by "
                       "`bassgen prepare`.")
  if not index.get("tracks"):
    raise BassgenError(f"{path}: lists no prepared tracks (see its 'skipped' list). Fix the source "
                       "files and re-run `bassgen prepare`.")
  for t in index["tracks"]:
    if not (data_dir / t["file"]).is_file():
      raise BassgenError(f"{data_dir / t['file']}: missing track file listed in {path}. Re-run "
                         "`bassgen prepare` into this folder to rebuild it.")
  return index


def rms_db(wav: np.ndarray) -> float:
  """RMS level in dB relative to full scale (a full-scale square wave is 0 dB)."""
  power = float(np.mean(np.square(wav, dtype=np.float64))) if wav.size else 0.0
  return max(10.0 * np.log10(power), _SILENCE_FLOOR_DB) if power > 0 else _SILENCE_FLOOR_DB


def mix_stems(stems_KxS: np.ndarray, rng: np.random.Generator,
              gain_db_range: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
  """The mixing rule: a random non-empty subset of the K stems, random gains, summed.

  Returns (mix [S], gains [K]) with gains[k] = 0 for stems left out, so mix == gains @ stems.
  """
  k = stems_KxS.shape[0]
  lo, hi = float(gain_db_range[0]), float(gain_db_range[1])
  chosen = rng.choice(k, size=int(rng.integers(1, k + 1)), replace=False)
  gains_K = np.zeros(k, np.float32)
  gains_K[chosen] = 10.0 ** (rng.uniform(lo, hi, size=chosen.size) / 20.0)
  return (gains_K @ stems_KxS).astype(np.float32), gains_K


class CropAndMix:
  """Turns an element id (a segment of the prepared data) into one example dict.

  Picklable: the ArrayRecord readers are opened lazily in whichever process uses the object.
  """

  def __init__(self, data_dir: str | pathlib.Path, *, crop_samples: int,
               silence_threshold_db: float | None, gain_db_range: Sequence[float],
               max_crop_tries: int, with_metadata: bool):
    self.data_dir = pathlib.Path(data_dir)
    index = read_index(self.data_dir)
    self.crop_samples = int(crop_samples)
    self.silence_threshold_db = silence_threshold_db
    self.gain_db_range = (float(gain_db_range[0]), float(gain_db_range[1]))
    self.max_crop_tries = max(1, int(max_crop_tries))
    self.with_metadata = with_metadata
    self.segment_samples = int(index["segment_samples"])
    tracks = index["tracks"]
    self.paths = [f"{self.data_dir / t['file']}[0:{t['num_segments']}]" for t in tracks]
    self.num_samples_T = np.array([t["num_samples"] for t in tracks], np.int64)
    num_segments_T = np.array([t["num_segments"] for t in tracks], np.int64)
    self.first_record_T = np.concatenate([[0], np.cumsum(num_segments_T)[:-1]])
    self.num_records = int(num_segments_T.sum())
    self.max_stems = max(len(t["stems"]) - 1 for t in tracks)
    self._source = None

  def __getstate__(self):
    state = self.__dict__.copy()
    state["_source"] = None
    return state

  def _records(self, keys: list[int]) -> list[bytes]:
    if self._source is None:
      import grain  # pylint: disable=g-import-not-at-top
      self._source = grain.sources.ArrayRecordDataSource(self.paths)
    return [self._source[k] for k in keys]

  def track_of(self, element: int) -> tuple[int, int]:
    """(track index, segment index within the track) of a global segment id."""
    t = int(np.searchsorted(self.first_record_T, element, side="right") - 1)
    return t, int(element - self.first_record_T[t])

  def read(self, track: int, start: int, rows: slice = slice(None)) -> np.ndarray:
    """Samples [start, start + crop) of the given rows of a track, zero-padded past its end."""
    seg = self.segment_samples
    stop = min(start + self.crop_samples, int(self.num_samples_T[track]))
    first, last = start // seg, (stop - 1) // seg
    raw = self._records([int(self.first_record_T[track]) + j for j in range(first, last + 1)])
    parts = [records.decode_rows(r, max(start - j * seg, 0), min(stop - j * seg, seg), rows)
             for j, r in zip(range(first, last + 1), raw)]
    out_KxS = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
    if out_KxS.shape[1] < self.crop_samples:
      out_KxS = np.pad(out_KxS, ((0, 0), (0, self.crop_samples - out_KxS.shape[1])))
    return out_KxS

  def example(self, element: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The example of `element` under the random stream `rng` (see the module docstring)."""
    track, segment = self.track_of(element)
    max_start = max(int(self.num_samples_T[track]) - self.crop_samples, 0)
    seg_start = segment * self.segment_samples
    if seg_start <= max_start:  # start inside the element's segment
      start = seg_start + int(rng.integers(min(self.segment_samples, max_start - seg_start + 1)))
    else:  # a crop cannot start this late: anywhere in the track
      start = int(rng.integers(max_start + 1))
    first = start

    def target(start):
      target_S = self.read(track, start, slice(0, 1))[0]
      return rms_db(target_S), target_S

    start, target_S = redraw_silent(
        lambda attempt: int(rng.integers(max_start + 1)) if attempt else first, target,
        self.max_crop_tries, self.silence_threshold_db)
    mix_S, gains_K = mix_stems(self.read(track, start, slice(1, None)), rng, self.gain_db_range)
    out = {"mix": mix_S, "target": target_S}
    if self.with_metadata:
      out["element"] = np.int64(element)
      out["track"] = np.int32(track)
      out["start"] = np.int64(start)
      out["gains"] = np.pad(gains_K, (0, self.max_stems - gains_K.size))
    return out

  def __call__(self, element: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return self.example(int(element), rng)


def redraw_silent(draw_start: Callable[[int], int], measure: Callable[[int], tuple[float, Any]],
                  tries: int, threshold_db: float | None) -> tuple[int, Any]:
  """The silent-crop rule of training crops (audio here, latents in `latents.py`): crop starts
  `draw_start(attempt)` are tried until `measure(start)` = (level in dB, payload) reaches
  `threshold_db` (None: the first is kept), at most `tries` times; returns the (start, payload)
  of the loudest try, so a silent track cannot stall the loop."""
  best = None
  for attempt in range(tries):
    start = draw_start(attempt)
    level, payload = measure(start)
    if best is None or level > best[0]:
      best = (level, start, payload)
    if threshold_db is None or level >= threshold_db:
      break
  return best[1], best[2]


class EvalExample:
  """Deterministic eval example number `e` of `total`: evenly spaced over the `cropper`'s
  `num_records` elements, drawn by `cropper(element, rng)` with rng seeded by (seed, e)."""

  def __init__(self, cropper: Callable[[int, np.random.Generator], dict], seed: int, total: int):
    self.cropper, self.seed, self.total = cropper, int(seed), int(total)

  def __call__(self, e: int) -> dict[str, np.ndarray]:
    element = (int(e) * self.cropper.num_records) // self.total
    return self.cropper(element, np.random.default_rng([self.seed, int(e)]))


def stream_seed(seed: int) -> int:
  """The seed of the global example stream. (It is the one process 0 used when every process
  shuffled its own elements, so single-process runs read the examples they always did.)"""
  return int(np.random.SeedSequence([int(seed), 0]).generate_state(1)[0])


def train_stream(cropper: Callable[[int, np.random.Generator], dict], batch_size: int, seed: int,
                 shard_index: int, shard_count: int) -> grain.MapDataset:
  """This process's batches of the global training stream: the `cropper`'s `num_records`
  elements shuffled by `stream_seed(seed)` (re-shuffled every epoch), each drawn by
  `cropper(element, rng)` (rng from the seed and the position), cut by `process_batches`."""
  import grain  # pylint: disable=g-import-not-at-top

  ds = grain.MapDataset.range(cropper.num_records).seed(stream_seed(seed)).shuffle().repeat()
  return process_batches(ds.random_map(cropper), batch_size, shard_index, shard_count)


def eval_stream(cropper: Callable[[int, np.random.Generator], dict], batch_size: int, seed: int,
                total: int, shard_index: int, shard_count: int) -> grain.MapDataset:
  """This process's batches of `total` fixed validation examples (`EvalExample`)."""
  import grain  # pylint: disable=g-import-not-at-top

  ds = grain.MapDataset.range(total).map(EvalExample(cropper, seed, total))
  return process_batches(ds, batch_size, shard_index, shard_count)


def process_shard(shard_index: int | None = None, shard_count: int | None = None
                  ) -> tuple[int, int]:
  """(this process's index, the process count), unless given."""
  if shard_index is None or shard_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    shard_index = jax.process_index() if shard_index is None else shard_index
    shard_count = jax.process_count() if shard_count is None else shard_count
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index {shard_index} outside [0, {shard_count})")
  return int(shard_index), int(shard_count)


def _check_args(data_dir, crop_samples: int, batch_size: int, gain_db_range) -> None:
  if crop_samples <= 0 or batch_size <= 0:
    raise BassgenError(f"{data_dir}: crop_samples ({crop_samples}) and batch_size ({batch_size}) "
                       "must be positive. Fix the data section of the config.")
  if gain_db_range[0] > gain_db_range[1]:
    raise BassgenError(f"gain_db_range {tuple(gain_db_range)}: the low end is above the high end. "
                       "Fix the data section of the config.")


def process_batches(ds: grain.MapDataset, batch_size: int, shard_index: int,
                    shard_count: int) -> grain.MapDataset:
  """This process's part of each global batch of `ds`: batch k of process i holds elements
  [(k*n + i) * B, (k*n + i + 1) * B) of `ds`, i.e. rows [i*B, (i+1)*B) of global batch k, for
  B = batch_size per process and n = shard_count processes."""
  return ds.batch(batch_size, drop_remainder=True)[shard_index::shard_count]


def _finish(ds: grain.MapDataset, worker_count: int, num_threads: int) -> grain.IterDataset:
  """An iterator over the batches of `ds`; its state is the number of batches read."""
  import grain  # pylint: disable=g-import-not-at-top

  # Each thread reads whole batches; a small buffer keeps memory bounded for long crops.
  options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=max(2 * num_threads, 2))
  it = ds.to_iter_dataset(options)
  if worker_count > 0:
    from absl import flags  # pylint: disable=g-import-not-at-top
    if not flags.FLAGS.is_parsed():
      raise BassgenError(
          f"data.worker_count={worker_count}: Grain's worker processes read absl flags, which are "
          "parsed only under absl.app.run (python -m bassgen.main). Elsewhere (a notebook, a "
          "script) call absl.flags.FLAGS.mark_as_parsed() first, or use worker_count=0.")
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return it


def make_train_dataset(data_dir: str | pathlib.Path, *, crop_samples: int, batch_size: int,
                       seed: int, silence_threshold_db: float | None = -45.0,
                       gain_db_range: Sequence[float] = (-9.0, 3.0),
                       shard_index: int | None = None, shard_count: int | None = None,
                       worker_count: int = 0, max_crop_tries: int = 10,
                       with_metadata: bool = False, num_threads: int = 4) -> grain.IterDataset:
  """Infinite, shuffled, batched training examples of this process's shard.

  Yields {'mix': float32[B, S], 'target': float32[B, S]} (numpy), with B = batch_size per process
  and S = crop_samples; with `with_metadata`, also 'element' int64[B] (global segment id the
  example was drawn for), 'track' int32[B] (index in index.json),
  'start' int64[B] (first sample of the crop) and 'gains' float32[B, max_stems] (linear gain of
  each non-target stem in index order, 0 = left out). shard_index/shard_count default to
  jax.process_index()/jax.process_count(). `iter(ds)` supports get_state()/set_state() and
  grain.checkpoint.CheckpointSave/CheckpointRestore.
  """
  _check_args(data_dir, crop_samples, batch_size, gain_db_range)
  shard_index, shard_count = process_shard(shard_index, shard_count)
  cropper = CropAndMix(data_dir, crop_samples=crop_samples,
                       silence_threshold_db=silence_threshold_db, gain_db_range=gain_db_range,
                       max_crop_tries=max_crop_tries, with_metadata=with_metadata)
  ds = train_stream(cropper, batch_size, seed, shard_index, shard_count)
  return _finish(ds, worker_count, num_threads)


def make_eval_dataset(data_dir: str | pathlib.Path, *, crop_samples: int, batch_size: int,
                      num_examples: int, seed: int = 0,
                      silence_threshold_db: float | None = -45.0,
                      gain_db_range: Sequence[float] = (-9.0, 3.0),
                      shard_index: int | None = None, shard_count: int | None = None,
                      max_crop_tries: int = 10, with_metadata: bool = False,
                      num_threads: int = 4) -> grain.IterDataset:
  """Finite, deterministic validation batches (the same examples on every `iter()`).

  The eval set holds num_examples // (batch_size * shard_count) batches per process (the rest is
  dropped so every batch has the same shape). Example e of the set starts in segment
  e * num_segments // set_size (spread evenly over the data) and is drawn with a generator seeded by
  (seed, e); batch k of process i holds examples (k*n + i) * B ... (k*n + i + 1) * B - 1, so the
  global batches are the same for any number of processes. Same dict format as
  `make_train_dataset`.
  """
  _check_args(data_dir, crop_samples, batch_size, gain_db_range)
  shard_index, shard_count = process_shard(shard_index, shard_count)
  num_batches = int(num_examples) // (batch_size * shard_count)
  if num_batches < 1:
    raise BassgenError(f"{data_dir}: num_examples={num_examples} gives no full batch of "
                       f"{batch_size} x {shard_count} processes. Raise num_examples in the config.")
  cropper = CropAndMix(data_dir, crop_samples=crop_samples,
                       silence_threshold_db=silence_threshold_db, gain_db_range=gain_db_range,
                       max_crop_tries=max_crop_tries, with_metadata=with_metadata)
  total = num_batches * batch_size * shard_count
  ds = eval_stream(cropper, batch_size, seed, total, shard_index, shard_count)
  return _finish(ds, 0, num_threads)
