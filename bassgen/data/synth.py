"""Note parts -> audio stems with a General MIDI soundfont, using PyPI packages only.

midirenderer (a Rust wheel with no system dependencies) renders a Standard MIDI File with a soundfont
to 48 kHz stereo 16-bit WAV bytes. Its sequencer stops at the file's last event, so every part gets a
no-op controller event at the song's end: release tails are kept and all stems get one length.
Each stem is rendered alone, downmixed to mono and resampled once to the requested rate.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import io
import os
import pathlib
from typing import NamedTuple

import numpy as np

from bassgen.errors import BassgenError

RENDER_RATE = 48000  # midirenderer's fixed output rate
MIDI_RESOLUTION = 960  # ticks per quarter note: < 1 ms at any tempo we write


class Note(NamedTuple):
  """One note; times in seconds from the start of the song."""
  pitch: int
  start: float
  end: float
  velocity: int


@dataclasses.dataclass
class Part:
  """The notes of one stem, played by one General MIDI program (drums: the percussion channel)."""
  name: str
  program: int
  notes: list[Note]
  is_drum: bool = False


def default_soundfont_path() -> pathlib.Path:
  """pretty_midi's bundled General MIDI soundfont (TimGM6mb.sf2)."""
  spec = importlib.util.find_spec("pretty_midi")
  if spec is None or spec.origin is None:
    raise BassgenError("pretty_midi is not installed, so its TimGM6mb.sf2 soundfont is missing. "
                       "Run `pip install pretty_midi` or pass --soundfont FILE.sf2.")
  return pathlib.Path(spec.origin).parent / "TimGM6mb.sf2"


@functools.lru_cache(maxsize=4)
def _read_soundfont(path: str, mtime_ns: int) -> bytes:
  del mtime_ns  # part of the cache key only: an edited file is read again
  data = pathlib.Path(path).read_bytes()
  if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"sfbk":
    raise BassgenError(f"{path}: not a SoundFont 2 file (.sf2). Give a General MIDI .sf2 soundfont "
                       "with --soundfont, or leave it out to use pretty_midi's TimGM6mb.sf2.")
  return data


def load_soundfont(path: str | os.PathLike | None = None) -> bytes:
  """The bytes of a .sf2 soundfont (default: pretty_midi's), read once per process."""
  path = pathlib.Path(path) if path is not None else default_soundfont_path()
  if not path.is_file():
    raise BassgenError(f"{path}: no such soundfont file. Pass --soundfont with the path of a .sf2 "
                       "file, or leave it out to use pretty_midi's TimGM6mb.sf2.")
  resolved = path.resolve()
  return _read_soundfont(str(resolved), resolved.stat().st_mtime_ns)


def midi_bytes(parts: list[Part], *, tempo: float, end_time: float,
               time_signature: tuple[int, int] = (4, 4)) -> bytes:
  """A Standard MIDI File holding `parts`, whose last event lies at `end_time` seconds."""
  import pretty_midi  # pylint: disable=g-import-not-at-top

  pm = pretty_midi.PrettyMIDI(resolution=MIDI_RESOLUTION, initial_tempo=float(tempo))
  pm.time_signature_changes.append(pretty_midi.TimeSignature(*time_signature, 0.0))
  for part in parts:
    inst = pretty_midi.Instrument(program=int(part.program), is_drum=part.is_drum, name=part.name)
    inst.notes = [pretty_midi.Note(int(n.velocity), int(n.pitch), float(n.start), float(n.end))
                  for n in part.notes]
    # Channel volume stays at its default (100): an event that only marks the end of the song.
    inst.control_changes.append(pretty_midi.ControlChange(7, 100, float(end_time)))
    pm.instruments.append(inst)
  buffer = io.BytesIO()
  pm.write(buffer)
  return buffer.getvalue()


def _decode_wav(wav: bytes) -> np.ndarray:
  """midirenderer's 16-bit stereo WAV bytes -> float32 [2, S]."""
  pos = 12
  while pos + 8 <= len(wav):
    chunk, size = wav[pos:pos + 4], int.from_bytes(wav[pos + 4:pos + 8], "little")
    if chunk == b"data":
      pcm = np.frombuffer(wav, dtype="<i2", count=min(size, len(wav) - pos - 8) // 2, offset=pos + 8)
      return pcm.reshape(-1, 2).T.astype(np.float32) * np.float32(1 / 32768)
    pos += 8 + size + (size & 1)
  raise RuntimeError("midirenderer returned a WAV without a data chunk")


def render_midi(midi: bytes, soundfont: bytes) -> np.ndarray:
  """Renders MIDI bytes with a soundfont: float32 [2, S] at RENDER_RATE."""
  import midirenderer  # pylint: disable=g-import-not-at-top

  return _decode_wav(midirenderer.render_wave_from(soundfont, midi))


def render_part(part: Part, *, tempo: float, end_time: float, sample_rate: int, soundfont: bytes,
                time_signature: tuple[int, int] = (4, 4)) -> np.ndarray:
  """One part alone -> mono float32 [round(end_time * sample_rate)] at `sample_rate`."""
  from bassgen.data.audio import resample  # pylint: disable=g-import-not-at-top

  midi = midi_bytes([part], tempo=tempo, end_time=end_time, time_signature=time_signature)
  wav_S = render_midi(midi, soundfont).mean(axis=0)
  wav_S = resample(wav_S, RENDER_RATE, sample_rate)
  num_samples = int(round(end_time * sample_rate))
  out_S = np.zeros(num_samples, np.float32)
  n = min(num_samples, wav_S.shape[0])
  out_S[:n] = wav_S[:n]
  return out_S
