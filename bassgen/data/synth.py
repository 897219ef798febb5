"""Note parts -> audio stems with a General MIDI soundfont, using PyPI packages only.

midirenderer (a Rust wheel with no system dependencies, rustysynth inside) renders a Standard MIDI
File with a soundfont to 48 kHz stereo 16-bit WAV bytes. Its sequencer stops at the file's last
event, so every part gets a no-op controller event at the song's end: release tails are kept and all
stems get one length. Stems are downmixed to mono and resampled once to the requested rate.

Speed: most of midirenderer's cost is a fixed per-sample cost (its reverb and chorus run whether or
not anything is sent to them), so two stems share one render when that changes nothing: one part
panned hard left, the other hard right, channel effect sends at zero (all stems are dry). That is
exact only for programs whose soundfont regions never pan towards the other side; `plan_renders`
reads that from the .sf2 and renders every other part alone.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import itertools
import os
import pathlib
import struct
from typing import NamedTuple

import numpy as np

from bassgen import notes
from bassgen.data.audio import resample
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


def clean_notes(notes: list[Note]) -> list[Note]:
  """Notes sorted by start; a note ends no later than the next note of the same pitch starts.

  MIDI cannot hold two overlapping notes of one pitch on one channel (the first note-off would end
  both), so overlaps are cut here, before the notes are written to song.json and to MIDI.
  """
  out, last = [], {}
  for n in sorted(notes, key=lambda n: (n.start, n.pitch, -n.end)):
    if n.pitch in last:
      k = last[n.pitch]
      if out[k].start >= n.start:  # same pitch, same start: keep the first (longest)
        continue
      if out[k].end > n.start:
        out[k] = out[k]._replace(end=n.start)
    last[n.pitch] = len(out)
    out.append(n)
  return out


def _track(events: list[tuple[int, int, bytes]]) -> bytes:
  """An MTrk chunk from (tick, order, message) events; `order` breaks ties at one tick."""
  data, now = bytearray(), 0
  for tick, _, message in sorted(events, key=lambda e: (e[0], e[1])):
    data += notes.varlen(tick - now) + message
    now = tick
  data += b"\x00\xff\x2f\x00"  # end of track
  return b"MTrk" + struct.pack(">I", len(data)) + bytes(data)


def midi_bytes(parts: list[Part], *, tempo: float, end_time: float,
               time_signature: tuple[int, int] = (4, 4), pans: list[int | None] | None = None,
               dry: bool = False) -> bytes:
  """A Standard MIDI File (format 1, one track per part), whose last event lies at `end_time` s.

  Drums play on channel 10, other parts on channels 1-9, 11-16 in order. `pans` gives each part a
  pan position (0 hard left, 127 hard right, None: unchanged); `dry` sets the reverb and chorus
  sends to zero.
  """
  ticks_per_s = MIDI_RESOLUTION * float(tempo) / 60.0

  def tick(t: float) -> int:
    return max(0, int(round(t * ticks_per_s)))

  num, den = time_signature
  usec = int(round(60e6 / float(tempo)))
  meta = [(0, 0, b"\xff\x51\x03" + usec.to_bytes(3, "big")),
          (0, 1, bytes([0xFF, 0x58, 4, num, int(den).bit_length() - 1, 24, 8]))]
  tracks = [_track(meta + [(tick(end_time), 9, b"\xff\x01\x00")])]
  channels = iter([c for c in range(16) if c != 9] * 8)
  for part, pan in zip(parts, pans or [None] * len(parts)):
    ch = 9 if part.is_drum else next(channels)
    events = [(0, 0, bytes([0xC0 | ch, int(part.program) & 0x7F]))]
    controls = [(91, 0), (93, 0)] if dry else []
    if pan is not None:  # coarse and fine pan: 0/0 is exactly -50 %, 127/127 exactly +50 %
      controls += [(10, pan), (42, pan)]
    events += [(0, 1, bytes([0xB0 | ch, c, v])) for c, v in controls]
    for n in clean_notes(part.notes):
      pitch, vel = min(127, max(0, int(n.pitch))), min(127, max(1, int(n.velocity)))
      start = tick(n.start)
      events.append((start, 3, bytes([0x90 | ch, pitch, vel])))
      events.append((max(start + 1, tick(n.end)), 2, bytes([0x80 | ch, pitch, 0])))
    # Channel volume stays at its default (100): an event that only marks the end of the song.
    events.append((tick(end_time), 4, bytes([0xB0 | ch, 7, 100])))
    tracks.append(_track(events))
  header = b"MThd" + struct.pack(">IHHH", 6, 1, len(tracks), MIDI_RESOLUTION)
  return header + b"".join(tracks)


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
_CHORUS, _REVERB, _PAN, _RELEASE, _INSTRUMENT, _KEYS, _VELS, _SAMPLE = 15, 16, 17, 38, 41, 43, 44, 53
MAX_POLYPHONY = 64  # rustysynth's default voice limit, shared by the parts of one render


@dataclasses.dataclass(frozen=True)
class ProgramInfo:
  """What a preset's regions do: pan range (0.1 % units), whether any region sends to reverb or
  chorus, the most regions sounding for one note, and the longest release in seconds."""
  pan_min: int
  pan_max: int
  sends: bool
  layers: int
  release_s: float

  def left_ok(self, sends_matter: bool) -> bool:
    """Hard left with zero channel sends, it sounds only in the left channel."""
    return self.pan_max <= 0 and not (sends_matter and self.sends)

  def right_ok(self, sends_matter: bool) -> bool:
    return self.pan_min >= 0 and not (sends_matter and self.sends)


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
    pans, releases, sends, grid = [], [], False, np.zeros((128, 128), np.int32)
    for pz in p_zones:
      i = int(pz[_INSTRUMENT]["amount"]) & 0xFFFF
      i_global, i_zones = _zones(inst[i], inst[i + 1], ibag, igen, _SAMPLE)
      for iz in i_zones:
        pans.append(_amount(_PAN, iz, i_global) + _amount(_PAN, pz, p_global))
        release = iz.get(_RELEASE, i_global.get(_RELEASE))
        releases.append((-12000 if release is None else int(release["amount"]))
                        + _amount(_RELEASE, pz, p_global))
        sends |= any(_amount(op, iz, i_global) + _amount(op, pz, p_global) > 0
                     for op in (_CHORUS, _REVERB))
        (k0, k1), (k2, k3) = _range(_KEYS, iz, i_global), _range(_KEYS, pz, p_global)
        (v0, v1), (v2, v3) = _range(_VELS, iz, i_global), _range(_VELS, pz, p_global)
        grid[max(k0, k2):min(k1, k3) + 1, max(v0, v2):min(v1, v3) + 1] += 1
    if pans:
      table[(bank, program)] = ProgramInfo(min(pans), max(pans), sends, int(grid.max()),
                                           float(2.0 ** (max(releases) / 1200)))
  return table


def program_info(part: Part, soundfont: bytes) -> ProgramInfo | None:
  """The soundfont facts for a part's program, with rustysynth's fallback to the GM bank."""
  table = soundfont_programs(soundfont)
  key = (128, part.program) if part.is_drum else (0, part.program)
  fallback = (128, 0) if part.is_drum else (0, part.program)
  return table.get(key, table.get(fallback))


@functools.lru_cache(maxsize=2)
def instrument_sends_matter(soundfont: bytes) -> bool:
  """Whether the renderer adds a region's own reverb/chorus send to a channel sent nothing.

  Checked once by rendering one note of such a program hard left: any sound on the right channel
  means it does, and such programs cannot share a render.
  """
  table = soundfont_programs(soundfont)
  probe = next(((b, p) for (b, p), i in sorted(table.items())
                if b == 0 and i.sends and i.pan_min == i.pan_max == 0), None)
  if probe is None:
    return True
  part = Part("probe", probe[1], [Note(60, 0.01, 0.3, 127)])
  pcm = render_midi(midi_bytes([part], tempo=120, end_time=0.6, pans=[0], dry=True), soundfont)
  return bool(np.any(pcm[:, 1]))


def max_voices(part: Part, info: ProgramInfo) -> int:
  """Most voices the part can hold at once: overlapping notes (with release) times layers."""
  tail = info.release_s + 0.05
  edges = sorted([(n.start, 1) for n in part.notes] + [(n.end + tail, -1) for n in part.notes])
  return info.layers * max(itertools.accumulate(d for _, d in edges), default=0)


def plan_renders(parts: list[Part], soundfont: bytes) -> list[tuple[tuple[Part, int | None], ...]]:
  """Groups parts into renders of (part, pan) with pan 0 (hard left), 127 (hard right) or None.

  Two parts share a render when one can sound on the left only and the other on the right only
  and their voices fit the synthesizer's polyphony together. A part left alone is still
  hard-panned when its program allows it (its effects then act on one side, as in a shared
  render); others (stereo programs such as the drum kit) are rendered alone, centred.
  """
  infos = [program_info(p, soundfont) for p in parts]
  voices = [max_voices(p, i) if i else MAX_POLYPHONY for p, i in zip(parts, infos)]
  sends = instrument_sends_matter(soundfont)
  left = [i is not None and i.left_ok(sends) for i in infos]
  right = [i is not None and i.right_ok(sends) for i in infos]

  def orient(a: int, b: int) -> tuple[int, int] | None:
    if voices[a] + voices[b] > MAX_POLYPHONY:
      return None
    if left[a] and right[b]:
      return a, b
    if left[b] and right[a]:
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

  return [((parts[g[0]], 0), (parts[g[1]], 127)) if len(g) == 2 else
          ((parts[g[0]], 0 if left[g[0]] else 127 if right[g[0]] else None),)
          for g in best(tuple(range(len(parts))))]


def render_parts(parts: list[Part], *, tempo: float, end_time: float, sample_rate: int,
                 soundfont: bytes, time_signature: tuple[int, int] = (4, 4),
                 share: bool = True) -> dict[str, np.ndarray]:
  """Each part as a dry mono stem: float32 [round(end_time * sample_rate)] at `sample_rate`.

  With `share`, parts that can be are rendered two at a time (see the module docstring and
  `plan_renders`); without, each part is rendered alone with the same pan: the stems are equal.
  """

  num_samples = int(round(end_time * sample_rate))
  stems = {}
  groups = plan_renders(parts, soundfont)
  if not share:
    groups = [(member,) for group in groups for member in group]
  for group in groups:
    midi = midi_bytes([p for p, _ in group], tempo=tempo, end_time=end_time,
                      time_signature=time_signature, pans=[pan for _, pan in group], dry=True)
    pcm_Sx2 = render_midi(midi, soundfont)
    # A hard-panned voice is sqrt(2) louder on its side than a centred one is on each side.
    if len(group) == 2:
      wav_CxS = pcm_Sx2.T.astype(np.float32) * np.float32(np.sqrt(0.5) / 32768)
    else:
      gain = np.sqrt(0.5) if group[0][1] is not None else 0.5
      wav_CxS = (pcm_Sx2[:, 0].astype(np.float32) + pcm_Sx2[:, 1]) * np.float32(gain / 32768)
    wav_CxS = resample(wav_CxS, RENDER_RATE, sample_rate).reshape(len(group), -1)
    for (part, _), wav_S in zip(group, wav_CxS):
      out_S = np.zeros(num_samples, np.float32)
      n = min(num_samples, wav_S.shape[0])
      out_S[:n] = wav_S[:n]
      stems[part.name] = out_S
  return {p.name: stems[p.name] for p in parts}
