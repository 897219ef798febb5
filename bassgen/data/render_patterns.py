"""Musical building blocks of the procedural songs: grooves, bass patterns, accompaniment styles.

Everything here works on the beat grid (quarter-note beats from the song start) and returns `Event`s;
`render_songs` turns them into timed notes.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

CHORD_INTERVALS = {
    "maj": (0, 4, 7), "min": (0, 3, 7), "dim": (0, 3, 6), "aug": (0, 4, 8), "sus4": (0, 5, 7),
    "sus2": (0, 2, 7), "6": (0, 4, 7, 9), "min6": (0, 3, 7, 9), "7": (0, 4, 7, 10),
    "maj7": (0, 4, 7, 11), "min7": (0, 3, 7, 10), "m7b5": (0, 3, 6, 10), "dim7": (0, 3, 6, 9),
}
BASS_PATTERNS = ("roots", "root_fifth", "octaves", "eighths", "walking", "syncopated", "arpeggio",
                 "sparse")


class Event(NamedTuple):
  beat: float
  beats: float
  pitch: int
  velocity: float


@dataclasses.dataclass
class Span:
  """One chord: where it starts (beats), how long it lasts, its root pitch class and quality."""
  start: float
  beats: float
  root_pc: int
  quality: str
  ending: bool = False

  @property
  def intervals(self) -> tuple[int, ...]:
    return CHORD_INTERVALS[self.quality]


@dataclasses.dataclass(frozen=True)
class Groove:
  """A drum groove on a 16th grid ('X' accent, 'x' normal, 'o' soft, 'g' ghost) and its style."""
  name: str
  beats_per_bar: int
  tempo_range: tuple[float, float]
  hits: dict[int, str]
  kits: tuple[int, ...]
  bass: dict[str, float]  # preferred bass patterns (others get a small weight)
  swing: bool = False
  weight: float = 1.0


# GM percussion keys used below: 36 kick, 37 side stick, 38 snare, 39 clap, 42 closed hat, 44 pedal
# hat, 46 open hat, 49 crash, 51 ride, 54 tambourine, 70 shaker; 41-50 toms in fills.
GROOVES = {g.name: g for g in (
    Groove("rock", 4, (90, 160), {36: "X.......X.x.....", 38: "....X.......X...",
                                  42: "x.o.x.o.x.o.x.o."}, (0, 8, 16),
           dict(eighths=2, roots=1, root_fifth=1, syncopated=1), weight=1.5),
    Groove("funk", 4, (82, 118), {36: "X..x..x...X..x..", 38: "....X..g.g..X..g",
                                  42: "xgogxgogxgogxgog"}, (0, 8),
           dict(syncopated=3, octaves=1, eighths=0.5)),
    Groove("shuffle", 4, (70, 140), {36: "X.....x.X.......", 38: "....X.......X...",
                                     42: "x.o.x.o.x.o.x.o."}, (0, 8),
           dict(walking=2, root_fifth=1.5, arpeggio=1), swing=True),
    Groove("halftime", 4, (120, 160), {36: "X..x......x.....", 38: "........X.......",
                                       42: "x.o.x.o.x.o.x.o."}, (0, 16),
           dict(roots=1.5, sparse=1.5, syncopated=1)),
    Groove("four_on_floor", 4, (100, 132), {36: "X...X...X...X...", 39: "....x.......x...",
                                            46: "..x...x...x...x.", 70: "gggggggggggggggg"},
           (0, 24, 25), dict(octaves=3, syncopated=1.5, eighths=1)),
    Groove("bossa", 4, (100, 150), {36: "X..oX..oX..oX..o", 37: "x..x..x...x..x..",
                                    42: "ogogogogogogogog"}, (0, 40),
           dict(root_fifth=3, sparse=1)),
    Groove("reggae", 4, (70, 100), {36: "........X.......", 37: "........x.......",
                                    42: "o.x.o.x.o.x.o.x."}, (0, 8),
           dict(sparse=3, syncopated=1)),
    Groove("jazz", 4, (100, 160), {51: "x...x.ox....x.ox", 44: "....x.......x...",
                                   36: "g.......g......."}, (32, 40),
           dict(walking=4, root_fifth=0.5), swing=True),
    Groove("motown", 4, (90, 130), {36: "X.....x.X.x.....", 38: "....X.......X...",
                                    54: "....x.......x...", 42: "x.o.x.o.x.o.x.o."}, (0, 8),
           dict(syncopated=1.5, walking=1, arpeggio=1, eighths=1)),
    Groove("waltz", 3, (80, 160), {36: "X...........", 38: "....o...o...", 42: "x.o.x.o.x.o."},
           (0, 8, 40), dict(roots=1.5, root_fifth=2, arpeggio=1), weight=0.6),
)}
_VELOCITY = {"X": 112, "x": 92, "o": 72, "g": 46}


def choose_bass_pattern(rng: np.random.Generator, groove: Groove) -> str:
  names = [p for p in BASS_PATTERNS if not (groove.swing and p == "syncopated")]
  weights = np.array([groove.bass.get(p, 0.0) + 0.25 for p in names])
  return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def _fit(pitch: int, low: int, high: int) -> int:
  while pitch < low:
    pitch += 12
  while pitch > high:
    pitch -= 12
  return pitch


def _nearest(pc: int, ref: int, low: int, high: int) -> int:
  """The pitch of class `pc` in [low, high] nearest to `ref`."""
  options = [p for p in range(low, high + 1) if p % 12 == pc]
  return min(options, key=lambda p: (abs(p - ref), p))


def _in_span(span: Span, bpb: int, positions) -> list[float]:
  """Bar-relative beat positions (repeated every bar) that fall inside the span, as absolute beats."""
  out = []
  bar0 = np.floor(span.start / bpb) * bpb
  for bar in np.arange(bar0, span.start + span.beats, bpb):
    out += [bar + p for p in positions if span.start - 1e-6 <= bar + p < span.start + span.beats - 1e-6]
  return out


# Bass patterns: each returns [(beat, beats, pitch, accent)] for one chord span.
def _roots(rng, span, root, nxt, st, bpb):
  del rng, nxt
  step = min(span.beats, {"span": span.beats, "half": 2.0, "quarter": 1.0}[st["rhythm"]])
  if bpb == 3 and st["rhythm"] == "half":
    step = min(span.beats, 3.0)
  return [(b, step * st["gate"], root, 2 if i == 0 else 1)
          for i, b in enumerate(np.arange(span.start, span.start + span.beats - 1e-6, step))]


def _root_fifth(rng, span, root, nxt, st, bpb):
  del rng, nxt
  fifth = root + 7 if root + 7 <= st["high"] else root - 5
  step = (1.0 if st["quarters"] else 2.0) if bpb == 4 else 3.0
  beats = np.arange(span.start, span.start + span.beats - 1e-6, min(step, span.beats))
  return [(b, min(step, span.beats) * 0.85, root if i % 2 == 0 else fifth, 2 if i == 0 else 1)
          for i, b in enumerate(beats)]


def _octaves(rng, span, root, nxt, st, bpb):
  del nxt, st, bpb
  return [(b, 0.22, root + 12 * (i % 2), 1 + (i == 0)) for i, b in
          enumerate(np.arange(span.start, span.start + span.beats - 1e-6, 0.5))
          if i == 0 or rng.random() > 0.08]


def _eighths(rng, span, root, nxt, st, bpb):
  del bpb
  beats = list(np.arange(span.start, span.start + span.beats - 1e-6, 0.5))
  pitches = [root] * len(beats)
  if len(beats) >= 4 and rng.random() < 0.5:
    pitches[-2] = root + 7 if root + 7 <= st["high"] else root + 12
    pitches[-1] = nxt + int(rng.choice([-1, 1, 2, -2]))
  return [(b, 0.5 * st["gate"], p, 2 if i == 0 else (1 if i % 2 == 0 else 0))
          for i, (b, p) in enumerate(zip(beats, pitches))]


def _walking(rng, span, root, nxt, st, bpb):
  del bpb
  n = max(1, int(round(span.beats)))
  tones = [root + i for i in CHORD_INTERVALS[span.quality]] + [root + 12]
  notes, prev = [root], root
  for k in range(1, n):
    if k == n - 1:
      p = nxt + int(rng.choice([-1, 1, -2, 2], p=[0.35, 0.35, 0.15, 0.15]))
    else:
      cands = [t for t in tones + [t - 12 for t in tones] if 0 < abs(t - prev) <= 7]
      p = int(rng.choice(cands)) if cands else root
    notes.append(p)
    prev = p
  return [(span.start + k, 0.9, _fit(p, st["low"], st["high"]), 2 if k == 0 else 1)
          for k, p in enumerate(notes)]


def _syncopated(rng, span, root, nxt, st, bpb):
  del rng, nxt
  seventh = 10 if span.quality not in ("maj7",) else 11
  degree = {"r": 0, "o": 12, "f": 7, "s": seventh}
  out = []
  for bar_pos, dur, deg in st["riff"]:
    for b in _in_span(span, bpb, [bar_pos]):
      p = root + degree[deg]
      out.append((b, dur, p if p <= st["high"] else p - 12, 2 if b == span.start else 1))
  if not out or out[0][0] > span.start:
    out.insert(0, (span.start, 0.4, root, 2))
  return out


def _arpeggio(rng, span, root, nxt, st, bpb):
  del rng, nxt, bpb
  tones = [root + i for i in CHORD_INTERVALS[span.quality][:3]] + [root + 12]
  cycle = tones + tones[-2:0:-1]
  step = st["step"]
  return [(b, step * 0.8, _fit(cycle[i % len(cycle)], st["low"], st["high"]), 2 if i == 0 else 1)
          for i, b in enumerate(np.arange(span.start, span.start + span.beats - 1e-6, step))]


_SPARSE = (((0, 1.4, 0), (2.5, 0.4, 7), (3, 0.8, 0)), ((0, 0.7, 0), (1.5, 0.4, 0), (3, 0.9, 12)),
           ((0, 2.5, 0), (3.5, 0.4, 7)), ((0.5, 1.0, 0), (2, 0.4, 0), (2.5, 1.2, 7)))


def _sparse(rng, span, root, nxt, st, bpb):
  del rng, nxt
  out = []
  for pos, dur, iv in st["template"]:
    if pos < bpb:
      for b in _in_span(span, bpb, [pos]):
        p = root + iv
        out.append((b, dur, p if p <= st["high"] else p - 12, 2 if pos == 0 else 1))
  return out


_PATTERN_FNS = dict(roots=_roots, root_fifth=_root_fifth, octaves=_octaves, eighths=_eighths,
                    walking=_walking, syncopated=_syncopated, arpeggio=_arpeggio, sparse=_sparse)


def _riff(rng: np.random.Generator, bpb: int) -> list[tuple[float, float, str]]:
  """A one-bar 16th-note bass riff: (bar position in beats, length in beats, degree)."""
  steps = 4 * bpb
  on = [0] + [s for s in range(1, steps) if rng.random() < (0.4 if s % 4 in (2, 3) else 0.22)]
  riff = []
  for i, s in enumerate(on):
    gap = (on[i + 1] if i + 1 < len(on) else steps) - s
    dur = min(gap, int(rng.integers(1, 4))) * 0.25 * 0.8
    deg = "r" if s == 0 else str(rng.choice(list("rrrrofs")))
    riff.append((s * 0.25, dur, deg))
  return riff


def bass_line(rng: np.random.Generator, spans: list[Span], sections, bpb: int, *, low: int,
              high: int, dynamics: float) -> list[Event]:
  """The bass part: each section plays its pattern over its chords; the ending holds the tonic."""
  states = []
  for _, _, name in sections:
    states.append(dict(rhythm=str(rng.choice(["span", "half", "quarter"])),
                       gate=float(rng.uniform(0.8, 0.95)), quarters=bool(rng.random() < 0.4),
                       riff=_riff(rng, bpb), step=float(rng.choice([0.5, 1.0])),
                       template=_SPARSE[int(rng.integers(len(_SPARSE)))], low=low, high=high,
                       name=name))
  base = 90 + dynamics
  roots = []
  prev = _nearest(spans[0].root_pc, low + 6, low, low + 12)
  for span in spans:
    prev = _nearest(span.root_pc, prev, low, high - 12)
    roots.append(prev)
  events = []
  for i, span in enumerate(spans):
    st = next(s for s, (a, b, _) in zip(states, sections) if a - 1e-6 <= span.start < b - 1e-6)
    root, nxt = roots[i], roots[min(i + 1, len(spans) - 1)]
    if span.ending:
      notes = [(span.start, span.beats, root, 2)]
    else:
      notes = _PATTERN_FNS[st["name"]](rng, span, root, nxt, st, bpb)
    for k, (beat, beats, pitch, accent) in enumerate(notes):
      if k > 0 and rng.random() < 0.06:  # an occasional rest
        continue
      vel = base + 9 * accent + rng.normal(0, 6)
      events.append(Event(float(beat), float(beats), _fit(int(pitch), low, high), vel))
  return events


def drum_part(rng: np.random.Generator, groove: Groove, spans: list[Span], fills: list[float],
              dynamics: float) -> tuple[int, list[Event]]:
  """The kit program and the drum hits: the groove every bar, fills and crashes at section edges."""
  bpb = groove.beats_per_bar
  ending = spans[-1].start
  events = []
  for bar in np.arange(0, ending, bpb):
    fill = any(abs(bar - f) < 1e-6 for f in fills) and rng.random() < 0.6
    fill_from = bpb - float(rng.choice([1, 2])) if fill else bpb
    for key, pattern in groove.hits.items():
      for step, c in enumerate(pattern[:4 * bpb]):
        if c != "." and step * 0.25 < fill_from:
          events.append(Event(bar + step * 0.25, 0.5, key, _VELOCITY[c] + dynamics + rng.normal(0, 6)))
    if rng.random() < 0.12:  # an extra kick
      events.append(Event(bar + 0.5 * int(rng.integers(1, 2 * bpb)), 0.5, 36, 80 + dynamics))
    if fill:
      toms = [38, 50, 48, 47, 45, 43, 41]
      n = int((bpb - fill_from) * 4)
      for i in range(n):
        key = toms[min(len(toms) - 1, int(i * len(toms) / n))] if rng.random() < 0.7 else 38
        events.append(Event(bar + fill_from + 0.25 * i, 0.25, key, 70 + 40 * i / n + dynamics))
    if (bar == 0 and rng.random() < 0.5) or any(abs(bar - f - bpb) < 1e-6 for f in fills):
      if bar == 0 or rng.random() < 0.7:
        events.append(Event(float(bar), 1.0, 49, 105 + dynamics))
  events += [Event(ending, float(bpb), 49, 110 + dynamics), Event(ending, 1.0, 36, 110 + dynamics)]
  return int(rng.choice(groove.kits)), events


def _voicing(pcs: list[int], prev: list[int] | None, low: int, high: int) -> list[int]:
  """Close-position voicing of `pcs` within [low, high], nearest to the previous voicing."""
  cands = []
  for rot in range(len(pcs)):
    order = pcs[rot:] + pcs[:rot]
    for bottom in range(low, low + 12):
      if bottom % 12 != order[0]:
        continue
      v = [bottom]
      for pc in order[1:]:
        v.append(v[-1] + (pc - v[-1]) % 12 or 12)
      if v[-1] <= high:
        cands.append(v)
  target = np.mean(prev) if prev else (low + high) / 2
  return min(cands, key=lambda v: (abs(np.mean(v) - target), v))


def _chord_pcs(span: Span) -> list[int]:
  return [(span.root_pc + i) % 12 for i in span.intervals]


def _guitar_voicing(span: Span, low: int = 40) -> list[int]:
  root = _fit(span.root_pc + 48, low, low + 11)
  iv = span.intervals
  shape = [0, iv[2], 12, 12 + iv[1], 12 + iv[2]] if len(iv) == 3 else [0, iv[2], iv[3], 12 + iv[1],
                                                                        12 + iv[2]]
  return [root + s for s in shape]


# Rhythms on the 8th grid of a 4/4 bar (positions in beats, lengths in beats).
_COMP = (((0, 1.5), (1.5, 2.5)), ((1, 0.4), (3, 0.4)), ((0, 0.4), (1.5, 0.4), (3, 0.8)),
         ((0, 0.8), (1, 0.4), (2, 0.8), (3, 0.4)), ((0.5, 0.3), (1.5, 0.3), (2.5, 0.3), (3.5, 0.3)))
_STRUM = (((0, 1, "D"), (1, 0.5, "D"), (1.5, 0.5, "U"), (2.5, 0.5, "U"), (3, 0.5, "D"),
           (3.5, 0.5, "U")),
          ((0, 0.5, "D"), (0.5, 0.5, "U"), (1, 0.5, "D"), (1.5, 0.5, "U"), (2, 0.5, "D"),
           (2.5, 0.5, "U"), (3, 0.5, "D"), (3.5, 0.5, "U")),
          ((0, 2, "D"), (2, 2, "D")))
STYLES = {"keys": ("block", "comp", "arp", "pulse"), "guitar": ("strum", "power", "arp", "skank"),
          "pad": ("sustain",), "strings": ("sustain", "stabs")}


def accompaniment(rng: np.random.Generator, stem: str, program: int, groove: Groove,
                  spans: list[Span], dynamics: float) -> tuple[str, list[Event]]:
  """A harmonic part (keys, guitar, pad or strings): its style name and its notes."""
  bpb = groove.beats_per_bar
  style = str(rng.choice(STYLES[stem]))
  if stem == "guitar" and program in (29, 30) and rng.random() < 0.7:
    style = "power"
  if stem == "strings" and program == 45:
    style = "stabs"
  base = dict(keys=74, guitar=80, pad=62, strings=70)[stem] + dynamics
  low, high = dict(keys=(53, 79), guitar=(52, 76), pad=(52, 77), strings=(55, 84))[stem]
  comp = _COMP[int(rng.integers(len(_COMP)))]
  strum = _STRUM[int(rng.integers(len(_STRUM)))]
  events, prev = [], None
  for span in spans:
    pcs = _chord_pcs(span)
    if stem == "strings" and len(pcs) == 4:  # three voices: root, third, seventh
      pcs = [pcs[0], pcs[1], pcs[3]]
    voicing = _voicing(pcs, prev, low, high)
    prev = voicing
    end = span.start + span.beats

    def hit(beat, beats, pitches, vel, spread=0.0):
      for j, p in enumerate(pitches):
        events.append(Event(beat + spread * j, max(0.1, beats - spread * j), p,
                            vel + rng.normal(0, 5)))

    if span.ending or style in ("block", "sustain"):
      if stem in ("keys", "guitar") and not span.ending:
        for b in _in_span(span, bpb, [0.0]):
          hit(b, min(bpb, end - b) * 0.95, voicing, base + 6)
      else:
        hit(span.start, span.beats * (1.0 if span.ending else 0.98), voicing, base + 4)
    elif style == "comp":
      for pos, beats in comp:
        for b in _in_span(span, bpb, [pos] if pos < bpb else []):
          hit(b, min(beats, end - b), voicing, base + (6 if pos == 0 else 0))
    elif style == "arp":
      cycle = voicing + [voicing[0] + 12]
      cycle = cycle + cycle[-2:0:-1]
      for i, b in enumerate(np.arange(span.start, end - 1e-6, 0.5)):
        hit(float(b), 0.9, [_fit(cycle[i % len(cycle)], low, high + 12)], base + (6 if i == 0 else 0))
    elif style == "pulse":
      step = 0.5 if groove.tempo_range[1] <= 132 else 1.0
      for i, b in enumerate(np.arange(span.start, end - 1e-6, step)):
        hit(float(b), step * 0.7, voicing, base + (8 if i % (2 / step) == 0 else 0))
    elif style == "strum":
      shape = _guitar_voicing(span)
      for pos, beats, d in strum:
        for b in _in_span(span, bpb, [pos] if pos < bpb else []):
          pitches = shape if d == "D" else shape[::-1][:4]
          hit(b, min(beats, end - b) * 0.95, pitches, base + (8 if d == "D" else -6), spread=0.03)
    elif style == "power":
      root = _fit(span.root_pc + 40, 40, 51)
      for i, b in enumerate(np.arange(span.start, end - 1e-6, 0.5)):
        hit(float(b), 0.3, [root, root + 7, root + 12], base + (8 if i % 2 == 0 else -4))
    elif style == "skank":
      for b in _in_span(span, bpb, [p + 0.5 for p in range(bpb)]):
        hit(b, 0.2, voicing, base)
    elif style == "stabs":
      for b in _in_span(span, bpb, [p for p in range(0, bpb, 2 if bpb == 4 else 1)]):
        hit(b, 0.45, voicing, base + 6)
  return style, events
