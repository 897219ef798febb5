"""(De)serialisation of prepared audio segments, one ArrayRecord file per track.

A record holds one time segment of one track: row 0 is the target stem, rows 1..K the other stems,
all at the prepared sample rate. Each row is stored as int16 with its own float32 scale
(peak / 32767), so a quiet stem keeps its full 16-bit resolution. The layout is a fixed binary
header and raw bytes; nothing is pickled:

  magic b"BGS1" | uint32 num_rows K | uint32 num_samples S | float32 scale[K] | int16 data[K, S]

All integers are little-endian.
"""
from __future__ import annotations

import os
import pathlib
import struct
from typing import Iterable

import numpy as np

from bassgen.errors import BassgenError

MAGIC = b"BGS1"
_HEADER = struct.Struct("<4sII")
# group_size:1 lets a reader fetch one record without decoding its neighbours; int16 audio barely
# compresses, so compression would only cost time.
WRITER_OPTIONS = "group_size:1,uncompressed"
TRACK_SUFFIX = ".array_record"


def encode_segment(stems_KxS: np.ndarray) -> bytes:
  """Packs float audio [K, S] (row 0 = target) into record bytes."""
  stems_KxS = np.asarray(stems_KxS, np.float32)
  if stems_KxS.ndim != 2 or stems_KxS.shape[0] < 1:
    raise ValueError(f"expected [K, S] stems, got shape {stems_KxS.shape}")
  if not np.all(np.isfinite(stems_KxS)):
    raise ValueError("segment contains NaN or infinite samples")
  peak_K = np.max(np.abs(stems_KxS), axis=1) if stems_KxS.shape[1] else np.zeros(len(stems_KxS))
  scale_K = (np.maximum(peak_K, 1e-12) / 32767.0).astype(np.float32)
  q_KxS = np.rint(stems_KxS / scale_K[:, None])
  q_KxS = np.clip(q_KxS, -32767, 32767).astype("<i2")
  header = _HEADER.pack(MAGIC, stems_KxS.shape[0], stems_KxS.shape[1])
  return header + scale_K.astype("<f4").tobytes() + q_KxS.tobytes()


def decode_segment(data: bytes) -> np.ndarray:
  """Unpacks record bytes into float32 audio [K, S] (row 0 = target)."""
  k, s = segment_shape(data)
  offset = _HEADER.size
  scale_K = np.frombuffer(data, "<f4", count=k, offset=offset)
  offset += 4 * k
  q_KxS = np.frombuffer(data, "<i2", count=k * s, offset=offset).reshape(k, s)
  return q_KxS.astype(np.float32) * scale_K[:, None]


def decode_rows(data: bytes, start: int, stop: int, rows: slice = slice(None)) -> np.ndarray:
  """Like `decode_segment` but only samples [start, stop) of the given rows (no full copy)."""
  k, s = segment_shape(data)
  if not 0 <= start <= stop <= s:
    raise ValueError(f"sample range [{start}, {stop}) outside segment of {s} samples")
  offset = _HEADER.size
  scale_K = np.frombuffer(data, "<f4", count=k, offset=offset)
  offset += 4 * k
  q_KxS = np.frombuffer(data, "<i2", count=k * s, offset=offset).reshape(k, s)
  return q_KxS[rows, start:stop].astype(np.float32) * scale_K[rows, None]


def segment_shape(data: bytes) -> tuple[int, int]:
  """(num_rows, num_samples) of a record, checking its header and size."""
  if len(data) < _HEADER.size:
    raise ValueError("record too short for a bassgen segment header")
  magic, k, s = _HEADER.unpack_from(data, 0)
  if magic != MAGIC:
    raise ValueError(f"not a bassgen segment record (magic {magic!r})")
  if len(data) != _HEADER.size + 4 * k + 2 * k * s:
    raise ValueError(f"corrupt segment record: {len(data)} bytes for {k} rows x {s} samples")
  return k, s


def write_track(path: str | os.PathLike, segments: Iterable[np.ndarray]) -> int:
  """Writes the segments of one track to `path` atomically (temporary name + rename).

  `segments` may be a generator, so a long track never needs a second full copy in memory.
  Returns the number of records written.
  """
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top

  path = pathlib.Path(path)
  tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
  count = 0
  try:
    writer = array_record_module.ArrayRecordWriter(str(tmp), WRITER_OPTIONS)
    try:
      for seg in segments:
        writer.write(encode_segment(seg))
        count += 1
    finally:
      writer.close()
    os.replace(tmp, path)
  except BaseException:
    if tmp.exists():
      tmp.unlink()
    raise
  return count


def read_track(path: str | os.PathLike) -> list[np.ndarray]:
  """Reads all segments of one track file (for tests and inspection)."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top

  path = pathlib.Path(path)
  if not path.is_file():
    raise BassgenError(f"{path}: no such prepared track file. Re-run `bassgen prepare`.")
  reader = array_record_module.ArrayRecordReader(str(path))
  try:
    n = reader.num_records()
    return [decode_segment(r) for r in reader.read(list(range(n)))] if n else []
  finally:
    reader.close()
