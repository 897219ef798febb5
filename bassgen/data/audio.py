"""Audio I/O: read anything soundfile reads, resample and downmix once, write atomically.

Every error a user can cause (a missing file, a folder, a file that is not audio, an empty file,
a file cut in the middle of its data, NaN/Inf samples, an output that exists) raises `BassgenError` with one message naming the file and
the fix.
"""
from __future__ import annotations

import itertools
import os
import pathlib
import re
import tempfile
from collections.abc import Iterable

import numpy as np
import soundfile as sf

from bassgen.errors import BassgenError

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".aif", ".aiff")
_WRITE_FORMATS = {".wav": ("WAV", "FLOAT"), ".flac": ("FLAC", "PCM_24")}
# libsndfile reports a WAV/AIFF data chunk shorter than its header as "data : N (should be M)" (bytes).
_CUT_CHUNK = re.compile(r"^\s*(data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_SAMPLE_BYTES = {"PCM_S8": 1, "PCM_U8": 1, "ULAW": 1, "ALAW": 1, "PCM_16": 2, "PCM_24": 3,
                 "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8}


def resample(wav: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
  """Resamples along the last axis with soxr (high quality); a no-op when the rates match."""
  if int(orig_sr) == int(target_sr):
    return np.asarray(wav, np.float32)
  import soxr  # pylint: disable=g-import-not-at-top

  wav = np.asarray(wav, np.float32)
  if wav.ndim == 1:
    return soxr.resample(wav, orig_sr, target_sr, quality="HQ").astype(np.float32)
  # soxr wants [frames, channels].
  return soxr.resample(wav.T, orig_sr, target_sr, quality="HQ").T.astype(np.float32).copy()


def audio_info(path: str | os.PathLike) -> sf._SoundFileInfo:  # pylint: disable=protected-access
  """Returns soundfile's header info, or raises BassgenError for anything that is not readable audio."""
  path = _check_input_path(path)
  try:
    return sf.info(str(path))
  except Exception as e:  # soundfile raises several types for unreadable input
    raise BassgenError(
        f"{path}: not a readable audio file ({_short(e)}). Give a WAV, FLAC, MP3 or OGG file.") from None


def check_complete(path: str | os.PathLike,
                   info: sf._SoundFileInfo | None = None) -> sf._SoundFileInfo:  # pylint: disable=protected-access
  """Returns the header info, or raises BassgenError if the file is cut in the middle of its data.

  A WAV or AIFF file whose data chunk is shorter than its header says (an interrupted copy or
  export) still decodes, to the part that is there; this names the file and how much is missing.
  """
  info = audio_info(path) if info is None else info
  cut = _CUT_CHUNK.search(info.extra_info or "")
  if cut is None or int(cut[2]) <= int(cut[3]):
    return info
  offset = 8 if cut[1] == "SSND" else 0   # an AIFF sound chunk starts with 8 bytes of offsets
  width = _SAMPLE_BYTES.get(info.subtype)
  if width is None:
    said = f"{int(cut[2]) - offset} bytes of audio, the file holds {int(cut[3]) - offset}"
  else:
    frames = (int(cut[2]) - offset) // (width * max(1, info.channels))
    missing = frames - info.frames
    said = (f"{frames} frames, the file holds {info.frames} ({missing} frames = "
            f"{missing / info.samplerate:.2f} s missing)")
  raise BassgenError(f"{path}: truncated: the header says {said}. Copy or export the file again.")


def load_audio(path: str | os.PathLike, sample_rate: int | None = None,
               mono: bool = True) -> tuple[np.ndarray, int]:
  """Reads an audio file as float32.

  Args:
    path: any file soundfile can decode (WAV, FLAC, MP3, OGG/Opus, AIFF), any rate and channel count.
    sample_rate: resample to this rate if given; otherwise keep the file's rate.
    mono: average the channels (returns [S]); otherwise returns [C, S].

  Returns:
    (waveform, sample_rate).
  """
  path = _check_input_path(path)
  check_complete(path)
  try:
    wav_SxC, sr = sf.read(str(path), dtype="float32", always_2d=True)
  except Exception as e:
    raise BassgenError(
        f"{path}: not a readable audio file ({_short(e)}). Give a WAV, FLAC, MP3 or OGG file, "
        "or re-export it if it is truncated.") from None
  if wav_SxC.shape[0] == 0 or wav_SxC.shape[1] == 0:
    raise BassgenError(f"{path}: the file holds no audio samples. Give a non-empty recording.")
  if not np.all(np.isfinite(wav_SxC)):
    raise BassgenError(
        f"{path}: the audio contains NaN or infinite samples. Re-export it from your editor.")
  wav = wav_SxC.mean(axis=1) if mono else wav_SxC.T
  if sample_rate is not None and int(sample_rate) != int(sr):
    wav = resample(wav, sr, sample_rate)
    sr = int(sample_rate)
  return np.ascontiguousarray(wav, np.float32), int(sr)


def save_audio(path: str | os.PathLike, wav: np.ndarray, sample_rate: int, *,
               overwrite: bool = False, subtype: str | None = None) -> pathlib.Path:
  """Writes [S] or [C, S] audio as WAV (float32) or FLAC (24 bit), atomically.

  The file is written under a temporary name in the same folder and renamed, so a reader never sees
  a half-written file. An existing file is only replaced when `overwrite` is set.
  """
  path = pathlib.Path(path)
  suffix = path.suffix.lower()
  if suffix not in _WRITE_FORMATS:
    raise BassgenError(f"{path}: cannot write '{suffix}' files. Use a .wav or .flac name.")
  fmt, default_subtype = _WRITE_FORMATS[suffix]
  wav = np.asarray(wav, np.float32)
  if wav.ndim not in (1, 2):
    raise ValueError(f"expected [S] or [C, S] audio, got shape {wav.shape}")
  if not np.all(np.isfinite(wav)):
    raise BassgenError(f"{path}: refusing to write audio with NaN/Inf samples.")
  data = wav if wav.ndim == 1 else wav.T
  if fmt == "FLAC":
    data = np.clip(data, -1.0, 1.0)

  def write(f):
    sf.write(f, data, int(sample_rate), format=fmt, subtype=subtype or default_subtype)

  return _atomic_write(path, write, overwrite=overwrite, binary=True)


def save_audio_blocks(path: str | os.PathLike, blocks: Iterable[np.ndarray], sample_rate: int, *,
                      overwrite: bool = False, subtype: str | None = None) -> pathlib.Path:
  """Writes consecutive blocks of [S] (or [C, S]) audio as one file, atomically, like
  `save_audio`: memory holds one block, whatever the length."""
  path = pathlib.Path(path)
  suffix = path.suffix.lower()
  if suffix not in _WRITE_FORMATS:
    raise BassgenError(f"{path}: cannot write '{suffix}' files. Use a .wav or .flac name.")
  fmt, default_subtype = _WRITE_FORMATS[suffix]
  blocks = iter(blocks)
  first = np.asarray(next(blocks, np.zeros(0, np.float32)), np.float32)
  if first.ndim not in (1, 2):
    raise ValueError(f"expected [S] or [C, S] audio blocks, got shape {first.shape}")
  channels = 1 if first.ndim == 1 else first.shape[0]

  def write(f):
    with sf.SoundFile(f, mode="w", samplerate=int(sample_rate), channels=channels, format=fmt,
                      subtype=subtype or default_subtype) as out:
      for block in itertools.chain([first], blocks):
        block = np.asarray(block, np.float32)
        if not np.all(np.isfinite(block)):
          raise BassgenError(f"{path}: refusing to write audio with NaN/Inf samples.")
        data = block if block.ndim == 1 else block.T
        out.write(np.clip(data, -1.0, 1.0) if fmt == "FLAC" else data)

  return _atomic_write(path, write, overwrite=overwrite, binary=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *,
                       overwrite: bool = False) -> pathlib.Path:
  """Writes bytes to `path` through a temporary file and a rename."""
  return _atomic_write(pathlib.Path(path), lambda f: f.write(data), overwrite=overwrite, binary=True)


def atomic_write_text(path: str | os.PathLike, text: str, *, overwrite: bool = False) -> pathlib.Path:
  """Writes text (UTF-8) to `path` through a temporary file and a rename."""
  return _atomic_write(pathlib.Path(path), lambda f: f.write(text.encode("utf-8")),
                       overwrite=overwrite, binary=True)


def list_audio_files(folder: str | os.PathLike) -> list[pathlib.Path]:
  """Sorted audio files (by extension) directly inside `folder`."""
  folder = pathlib.Path(folder)
  if not folder.is_dir():
    raise BassgenError(f"{folder}: not a folder. Give a folder that holds audio files.")
  return sorted(p for p in folder.iterdir()
                if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith("."))


def check_writable_dir(folder: str | os.PathLike) -> pathlib.Path:
  """Creates `folder` if needed and checks that files can be written there."""
  folder = pathlib.Path(folder)
  try:
    folder.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise BassgenError(f"{folder}: cannot create the output folder ({e.strerror}). "
                       "Choose another --out folder.") from None
  if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
    raise BassgenError(f"{folder}: the output folder is not writable. Choose another --out folder "
                       "or fix its permissions.")
  return folder


def _check_input_path(path: str | os.PathLike) -> pathlib.Path:
  path = pathlib.Path(path)
  if not path.exists():
    raise BassgenError(f"{path}: no such file. Check the path.")
  if path.is_dir():
    raise BassgenError(f"{path}: is a folder, not an audio file. Give the path of a file.")
  if path.stat().st_size == 0:
    raise BassgenError(f"{path}: the file is empty (0 bytes). Give a non-empty recording.")
  return path


def _atomic_write(path: pathlib.Path, write_fn, *, overwrite: bool, binary: bool) -> pathlib.Path:
  del binary
  if path.exists() and not overwrite:
    raise BassgenError(f"{path}: already exists. Pass --overwrite to replace it, or choose another "
                       "output folder.")
  folder = path.parent if str(path.parent) else pathlib.Path(".")
  if not folder.is_dir():
    raise BassgenError(f"{folder}: the output folder does not exist. Create it first.")
  try:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
  except OSError as e:
    raise BassgenError(f"{folder}: cannot write here ({e.strerror}). Choose another output "
                       "folder.") from None
  try:
    with os.fdopen(fd, "wb") as f:
      write_fn(f)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
  return path


def _short(e: Exception) -> str:
  msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
  return msg[:160]
