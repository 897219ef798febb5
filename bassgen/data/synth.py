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
import itertools
import os
import pathlib
import struct
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
               time_signature: tuple[int, int] = (4, 4), pans: list[int | None] | None = None,
               dry: bool = False) -> bytes:
  """A Standard MIDI File holding `parts`, whose last event lies at `end_time` seconds.

  `pans` gives each part a pan position (0 hard left, 127 hard right, None: unchanged); `dry` sets
  the reverb and chorus sends to zero.
  """
  import pretty_midi  # pylint: disable=g-import-not-at-top

  pm = pretty_midi.PrettyMIDI(resolution=MIDI_RESOLUTION, initial_tempo=float(tempo))
  pm.time_signature_changes.append(pretty_midi.TimeSignature(*time_signature, 0.0))
  for part, pan in zip(parts, pans or [None] * len(parts)):
    inst = pretty_midi.Instrument(program=int(part.program), is_drum=part.is_drum, name=part.name)
    inst.notes = [pretty_midi.Note(int(n.velocity), int(n.pitch), float(n.start), float(n.end))
                  for n in part.notes]
    controls = [(91, 0), (93, 0)] if dry else []
    if pan is not None:  # coarse and fine pan: 0/0 is exactly -50 %, 127/127 exactly +50 %
      controls += [(10, pan), (42, pan)]
    inst.control_changes = [pretty_midi.ControlChange(c, v, 0.0) for c, v in controls]
    # Channel volume stays at its default (100): an event that only marks the end of the song.
    inst.control_changes.append(pretty_midi.ControlChange(7, 100, float(end_time)))
    pm.instruments.append(inst)
  buffer = io.BytesIO()
  pm.write(buffer)
  return buffer.getvalue()


def _decode_wav(wav: bytes) -> np.ndarray:
  """midirenderer's 16-bit stereo WAV bytes -> int16 [S, 2]."""
  pos = 12
  while pos + 8 <= len(wav):
    chunk, size = wav[pos:pos + 4], int.from_bytes(wav[pos + 4:pos + 8], "little")
    if chunk == b"data":
      count = min(size, len(wav) - pos - 8) // 4 * 2
      return np.frombuffer(wav, dtype="<i2", count=count, offset=pos + 8).reshape(-1, 2)
    pos += 8 + size + (size & 1)
  raise RuntimeError("midirenderer returned a WAV without a data chunk")


def render_midi(midi: bytes, soundfont: bytes) -> np.ndarray:
  """Renders MIDI bytes with a soundfont: int16 [S, 2] (left, right) at RENDER_RATE."""
  import midirenderer  # pylint: disable=g-import-not-at-top

  return _decode_wav(midirenderer.render_wave_from(soundfont, midi))


# Soundfont generators (SF2 2.04, section 8.1.2) that decide whether a part can share a render.
_CHORUS, _REVERB, _PAN, _INSTRUMENT, _KEYS, _VELS, _SAMPLE = 15, 16, 17, 41, 43, 44, 53
MAX_POLYPHONY = 64  # rustysynth's default voice limit, shared by the parts of one render


@dataclasses.dataclass(frozen=True)
class ProgramInfo:
  """What a preset's regions do: pan range (0.1 % units), effect sends, most layers per note."""
  pan_min: int
  pan_max: int
  sends: bool
  layers: int

  @property
  def left_ok(self) -> bool:
    """Hard left, it sounds only in the left channel."""
    return not self.sends and self.pan_max <= 0

  @property
  def right_ok(self) -> bool:
    return not self.sends and self.pan_min >= 0


def _riff_chunks(data: bytes, start: int, end: int) -> dict[bytes, tuple[int, int]]:
  chunks, pos = {}, start
  while pos + 8 <= end:
    cid, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
    key = data[pos + 8:pos + 12] if cid == b"LIST" else cid
    chunks[key] = (pos + 12, size - 4) if cid == b"LIST" else (pos + 8, size)
    pos += 8 + size + (size & 1)
  return chunks


def _zones(first_bag: int, end_bag: int, bag_gen: np.ndarray, gens: np.ndarray, terminal: int):
  """(global zone, local zones) of one preset or instrument, each a dict op -> raw generator."""
  global_zone, zones = {}, []
  for z in range(first_bag, end_bag):
    zone = {int(g["op"]): g for g in gens[bag_gen[z]:bag_gen[z + 1]]}
    if terminal in zone:
      zones.append(zone)
    elif z == first_bag:
      global_zone = zone
  return global_zone, zones


def _amount(op: int, zone: dict, global_zone: dict) -> int:
  g = zone.get(op, global_zone.get(op))
  return 0 if g is None else int(g["amount"])


def _range(op: int, zone: dict, global_zone: dict) -> tuple[int, int]:
  g = zone.get(op, global_zone.get(op))
  return (0, 127) if g is None else (int(g["lo"]), int(g["hi"]))


@functools.lru_cache(maxsize=2)
def soundfont_programs(soundfont: bytes) -> dict[tuple[int, int], ProgramInfo]:
  """ProgramInfo of every preset of a .sf2, keyed by (bank, program)."""
  top = _riff_chunks(soundfont, 12, len(soundfont))
  if b"pdta" not in top:
    raise BassgenError("the soundfont has no preset data (pdta). Give a valid .sf2 file.")
  start, size = top[b"pdta"]
  sub = {k: soundfont[o:o + n] for k, (o, n) in _riff_chunks(soundfont, start, start + size).items()}
  gen_t = np.dtype([("op", "<u2"), ("amount", "<i2")])
  range_t = np.dtype([("op", "<u2"), ("lo", "u1"), ("hi", "u1")])

  def gens(name):
    a, r = np.frombuffer(sub[name], gen_t), np.frombuffer(sub[name], range_t)
    out = np.zeros(len(a), [("op", "<u2"), ("amount", "<i4"), ("lo", "u1"), ("hi", "u1")])
    out["op"], out["amount"], out["lo"], out["hi"] = a["op"], a["amount"], r["lo"], r["hi"]
    return out

  pgen, igen = gens(b"pgen"), gens(b"igen")
  pbag = np.frombuffer(sub[b"pbag"], "<u2").reshape(-1, 2)[:, 0]
  ibag = np.frombuffer(sub[b"ibag"], "<u2").reshape(-1, 2)[:, 0]
  phdr = [struct.unpack_from("<20sHHH", sub[b"phdr"], o) for o in range(0, len(sub[b"phdr"]), 38)]
  inst = [struct.unpack_from("<20sH", sub[b"inst"], o)[1] for o in range(0, len(sub[b"inst"]), 22)]
  table = {}
  for (_, program, bank, bag), nxt in zip(phdr[:-1], phdr[1:]):
    p_global, p_zones = _zones(bag, nxt[3], pbag, pgen, _INSTRUMENT)
    pans, sends, grid = [], False, np.zeros((128, 128), np.int32)
    for pz in p_zones:
      i = int(pz[_INSTRUMENT]["amount"]) & 0xFFFF
      i_global, i_zones = _zones(inst[i], inst[i + 1], ibag, igen, _SAMPLE)
      for iz in i_zones:
        pans.append(_amount(_PAN, iz, i_global) + _amount(_PAN, pz, p_global))
        sends |= any(_amount(op, iz, i_global) + _amount(op, pz, p_global) > 0
                     for op in (_CHORUS, _REVERB))
        (k0, k1), (k2, k3) = _range(_KEYS, iz, i_global), _range(_KEYS, pz, p_global)
        (v0, v1), (v2, v3) = _range(_VELS, iz, i_global), _range(_VELS, pz, p_global)
        grid[max(k0, k2):min(k1, k3) + 1, max(v0, v2):min(v1, v3) + 1] += 1
    if pans:
      table[(bank, program)] = ProgramInfo(min(pans), max(pans), sends, int(grid.max()))
  return table


def program_info(part: Part, soundfont: bytes) -> ProgramInfo | None:
  """The soundfont facts for a part's program, with rustysynth's fallback to the GM bank."""
  table = soundfont_programs(soundfont)
  key = (128, part.program) if part.is_drum else (0, part.program)
  fallback = (128, 0) if part.is_drum else (0, part.program)
  return table.get(key, table.get(fallback))


def max_voices(part: Part, layers: int, release_s: float = 1.5) -> int:
  """Most voices the part can hold at once: overlapping notes (plus a release) times layers."""
  edges = sorted([(n.start, 1) for n in part.notes] + [(n.end + release_s, -1) for n in part.notes])
  return layers * max(itertools.accumulate(d for _, d in edges), default=0)


def plan_renders(parts: list[Part], soundfont: bytes) -> list[tuple[Part, ...]]:
  """Groups parts into renders: pairs (left part, right part) that are exact, others alone."""
  infos = [program_info(p, soundfont) for p in parts]
  voices = [max_voices(p, i.layers) if i else MAX_POLYPHONY for p, i in zip(parts, infos)]

  def orient(a: int, b: int) -> tuple[int, int] | None:
    if voices[a] + voices[b] > MAX_POLYPHONY or infos[a] is None or infos[b] is None:
      return None
    if infos[a].left_ok and infos[b].right_ok:
      return a, b
    if infos[b].left_ok and infos[a].right_ok:
      return b, a
    return None

  def best(items: tuple[int, ...]) -> list[tuple[int, ...]]:
    if not items:
      return []
    first, rest = items[0], items[1:]
    plan = [(first,)] + best(rest)
    for j, other in enumerate(rest):
      pair = orient(first, other)
      if pair:
        cand = [pair] + best(rest[:j] + rest[j + 1:])
        if sum(len(g) == 2 for g in cand) > sum(len(g) == 2 for g in plan):
          plan = cand
    return plan

  return [tuple(parts[i] for i in group) for group in best(tuple(range(len(parts))))]


def render_parts(parts: list[Part], *, tempo: float, end_time: float, sample_rate: int,
                 soundfont: bytes, time_signature: tuple[int, int] = (4, 4),
                 share: bool = True) -> dict[str, np.ndarray]:
  """Each part as a dry mono stem: float32 [round(end_time * sample_rate)] at `sample_rate`.

  With `share`, parts that can be are rendered two at a time (see the module docstring); the
  result is the same as rendering each alone.
  """
  from bassgen.data.audio import resample  # pylint: disable=g-import-not-at-top

  groups = plan_renders(parts, soundfont) if share else [(p,) for p in parts]
  num_samples = int(round(end_time * sample_rate))
  stems = {}
  for group in groups:
    pans = [0, 127] if len(group) == 2 else [None]
    midi = midi_bytes(list(group), tempo=tempo, end_time=end_time, time_signature=time_signature,
                      pans=pans, dry=True)
    pcm_Sx2 = render_midi(midi, soundfont)
    if len(group) == 2:  # a hard-panned voice has the level of a centred one times sqrt(2)
      wav_CxS = pcm_Sx2.T.astype(np.float32) * np.float32(np.sqrt(0.5) / 32768)
    else:
      wav_CxS = (pcm_Sx2[:, 0].astype(np.float32) + pcm_Sx2[:, 1]) * np.float32(0.5 / 32768)
    wav_CxS = resample(wav_CxS, RENDER_RATE, sample_rate).reshape(len(group), -1)
    for part, wav_S in zip(group, wav_CxS):
      out_S = np.zeros(num_samples, np.float32)
      n = min(num_samples, wav_S.shape[0])
      out_S[:n] = wav_S[:n]
      stems[part.name] = out_S
  return {p.name: stems[p.name] for p in parts}
