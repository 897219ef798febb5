"""Procedural songs: tempo, key, chord progression, drum groove, a bass line and accompaniment.

A song is composed on a beat grid, then converted to seconds (with swing for shuffle and jazz feels
and a few milliseconds of human timing). Song i of a run draws all its randomness from
`np.random.default_rng([seed, i])`, so it depends on (seed, i) only.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from bassgen.data import render_patterns as pat
from bassgen.data.synth import Note, Part, clean_notes

NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
BASS_PROGRAMS = tuple(range(32, 40))  # GM bass family
BASS_LOW, BASS_HIGH = 28, 55  # E1 .. G3
PRE_ROLL_S = 0.1  # silence before the first beat
TAIL_S = 1.5  # after the last bar: releases and reverb

# (root offset from the tonic in semitones, chord quality) per chord.
PROGRESSIONS = {
    "major": (
        ((0, "maj"), (7, "maj"), (9, "min"), (5, "maj")),
        ((0, "maj"), (9, "min"), (5, "maj"), (7, "maj")),
        ((2, "min7"), (7, "7"), (0, "maj7"), (0, "maj7")),
        ((0, "maj"), (5, "maj"), (0, "maj"), (7, "maj")),
        ((9, "min"), (5, "maj"), (0, "maj"), (7, "maj")),
        ((0, "maj"), (4, "min"), (5, "maj"), (7, "maj")),
        ((0, "maj7"), (5, "maj7"), (4, "min7"), (9, "min7")),
        ((0, "maj"), (10, "maj"), (5, "maj"), (0, "maj")),
        ((0, "7"), (5, "7"), (0, "7"), (7, "7")),
        ((5, "maj7"), (7, "7"), (4, "min7"), (9, "min")),
        ((0, "maj"), (7, "sus4"), (9, "min"), (5, "maj")),
        ((0, "6"), (9, "min7"), (2, "min7"), (7, "7")),
    ),
    "minor": (
        ((0, "min"), (8, "maj"), (3, "maj"), (10, "maj")),
        ((0, "min"), (5, "min"), (7, "min"), (0, "min")),
        ((0, "min"), (10, "maj"), (8, "maj"), (7, "maj")),
        ((0, "min"), (5, "min"), (10, "maj"), (3, "maj")),
        ((0, "min7"), (5, "min7"), (0, "min7"), (7, "7")),
        ((2, "m7b5"), (7, "7"), (0, "min"), (0, "min")),
        ((0, "min"), (8, "maj"), (5, "min"), (7, "maj")),
        ((0, "min7"), (3, "maj7"), (8, "maj7"), (7, "7")),
    ),
}

# GM programs per accompaniment stem.
STEM_PROGRAMS = {
    "keys": (0, 1, 2, 4, 5, 6, 7, 16, 17, 18),
    "guitar": (24, 25, 26, 27, 28, 29, 30),
    "pad": (52, 54, 88, 89, 90, 91, 92, 94, 95),
    "strings": (44, 45, 48, 49, 50, 51),
}
ACCOMPANIMENT = ("keys", "guitar", "pad", "strings")


@dataclasses.dataclass
class Song:
  """Everything needed to render and describe one track (times in seconds)."""
  name: str
  tempo: float
  key: str
  time_signature: tuple[int, int]
  duration: float
  parts: list[Part]
  chords: list[dict]
  bass_sections: list[dict]  # [{start, end, pattern}]
  meta: dict

  @property
  def bass(self) -> Part:
    return next(p for p in self.parts if p.name == "bass")


@dataclasses.dataclass
class _Sketch:
  """A song on the beat grid, before timing."""
  beats_per_bar: int
  spans: list[pat.Span]
  sections: list[tuple[float, float, str]]  # (start beat, end beat, bass pattern)
  fills: list[float]  # start beats of bars that end a section


def _pick(rng: np.random.Generator, options, weights=None):
  if weights is not None:
    weights = np.asarray(weights, np.float64)
    weights = weights / weights.sum()
  return options[int(rng.choice(len(options), p=weights))]


def _plan_form(rng: np.random.Generator, tempo: float, beats_per_bar: int, num_chords: int):
  """Chord length in beats and number of progression passes for a 20-40 s song."""
  spb = 60.0 / tempo
  bar_s = beats_per_bar * spb
  target = rng.uniform(20.0, 38.0)
  options = []
  for bars_per_chord in (0.5, 1, 2):
    if beats_per_bar % 2 and bars_per_chord == 0.5:
      continue
    section_s = num_chords * bars_per_chord * bar_s
    passes = int(np.clip(round((target - bar_s) / section_s), 2, 10))
    total = passes * section_s + bar_s
    if 18.0 <= total <= 42.0:
      options.append((bars_per_chord, passes))
  if not options:
    passes = int(np.clip(round((target - bar_s) / (num_chords * bar_s)), 2, 10))
    return beats_per_bar, passes
  bars_per_chord, passes = options[int(rng.integers(len(options)))]
  return bars_per_chord * beats_per_bar, passes


def _sketch(rng: np.random.Generator, groove: pat.Groove, mode: str, tonic_pc: int,
            tempo: float) -> _Sketch:
  """Form, chords and bass patterns on the beat grid."""
  progs = PROGRESSIONS[mode]
  prog_a = progs[int(rng.integers(len(progs)))]
  prog_b = progs[int(rng.integers(len(progs)))] if rng.random() < 0.7 else prog_a
  chord_beats, passes = _plan_form(rng, tempo, groove.beats_per_bar, len(prog_a))
  labels = ["A"] + [("B" if rng.random() < 0.4 else "A") for _ in range(passes - 1)]
  if prog_b is not prog_a and "B" not in labels and passes > 2:
    labels[-2] = "B"
  pattern_a = pat.choose_bass_pattern(rng, groove)
  pattern_b = pat.choose_bass_pattern(rng, groove) if rng.random() < 0.6 else pattern_a
  spans, sections, fills = [], [], []
  beat = 0.0
  for label in labels:
    prog = prog_a if label == "A" else prog_b
    start = beat
    for offset, quality in prog:
      spans.append(pat.Span(beat, chord_beats, (tonic_pc + offset) % 12, quality))
      beat += chord_beats
    sections.append((start, beat, pattern_a if label == "A" else pattern_b))
    fills.append(beat - groove.beats_per_bar)
  ending_quality = "maj" if mode == "major" else "min"
  spans.append(pat.Span(beat, float(groove.beats_per_bar), tonic_pc, ending_quality, ending=True))
  sections.append((beat, beat + groove.beats_per_bar, "ending"))
  return _Sketch(groove.beats_per_bar, spans, sections, fills[:-1])


class _Clock:
  """Beats -> seconds with optional swing of the off-beat eighths and human timing."""

  def __init__(self, rng: np.random.Generator, tempo: float, swing: float):
    self.rng, self.spb, self.swing = rng, 60.0 / tempo, swing

  def warp(self, beat: float) -> float:
    whole = np.floor(beat)
    f = beat - whole
    if self.swing > 0.5:  # the "and" moves from 0.5 to `swing` of the beat
      f = f * 2 * self.swing if f <= 0.5 else self.swing + (f - 0.5) * 2 * (1 - self.swing)
    return PRE_ROLL_S + (whole + f) * self.spb

  def notes(self, events: list[pat.Event], jitter_s: float) -> list[Note]:
    out = []
    for e in sorted(events, key=lambda e: (e.beat, e.pitch)):
      shift = min(2.5 * jitter_s, max(-2.5 * jitter_s, float(self.rng.normal(0, jitter_s))))
      start = max(0.0, self.warp(e.beat) + shift)
      end = max(start + 0.03, self.warp(e.beat + e.beats) + shift)
      out.append(Note(int(e.pitch), round(float(start), 4), round(float(end), 4),
                      min(127, max(1, int(round(e.velocity))))))
    return clean_notes(out)


def song_name(seed: int, index: int) -> str:
  """The folder name of song `index` of a run with `seed`."""
  return f"song_{int(seed):06d}_{int(index):05d}"


def _chord_pitches(root_pc: int, quality: str) -> list[int]:
  return [60 + root_pc + i for i in pat.CHORD_INTERVALS[quality]]


def compose_song(seed: int, index: int) -> Song:
  """The song number `index` of a run with `seed`; the same pair always gives the same song."""
  rng = np.random.default_rng([int(seed), int(index)])
  groove = pat.GROOVES[_pick(rng, list(pat.GROOVES), [g.weight for g in pat.GROOVES.values()])]
  tempo = float(round(rng.uniform(*groove.tempo_range), 1))
  mode = "major" if rng.random() < 0.6 else "minor"
  tonic_pc = int(rng.integers(12))
  sketch = _sketch(rng, groove, mode, tonic_pc, tempo)

  # Instrumentation: bass, drums (usually), and at least one harmonic part; at least two non-bass.
  has_drums = rng.random() < 0.85
  accompaniment = [s for s in ACCOMPANIMENT if rng.random() < 0.4]
  while not accompaniment or len(accompaniment) + has_drums < 2:
    extra = _pick(rng, [s for s in ACCOMPANIMENT if s not in accompaniment])
    accompaniment.append(extra)
  accompaniment.sort(key=ACCOMPANIMENT.index)

  swing = float(rng.uniform(0.6, 0.68)) if groove.swing else 0.5
  clock = _Clock(rng, tempo, swing)
  dynamics = float(rng.uniform(-12, 10))  # the song's overall playing strength, in velocity steps
  programs, styles = {}, {}

  bass_program = int(_pick(rng, BASS_PROGRAMS))
  bass_events = pat.bass_line(rng, sketch.spans, sketch.sections, sketch.beats_per_bar,
                              low=BASS_LOW, high=BASS_HIGH, dynamics=dynamics)
  parts = [Part("bass", bass_program, clock.notes(bass_events, 0.004))]
  programs["bass"] = bass_program
  if has_drums:
    kit, drum_events = pat.drum_part(rng, groove, sketch.spans, sketch.fills, dynamics)
    parts.append(Part("drums", kit, clock.notes(drum_events, 0.003), is_drum=True))
    programs["drums"] = kit
  for stem in accompaniment:
    program = int(_pick(rng, STEM_PROGRAMS[stem]))
    style, events = pat.accompaniment(rng, stem, program, groove, sketch.spans, dynamics)
    parts.append(Part(stem, program, clock.notes(events, 0.006)))
    programs[stem], styles[stem] = program, style

  last_beat = sketch.spans[-1].start + sketch.spans[-1].beats
  duration = round(clock.warp(last_beat) + TAIL_S, 3)
  chords = [dict(start=round(clock.warp(s.start), 4), end=round(clock.warp(s.start + s.beats), 4),
                 root_pc=s.root_pc, quality=s.quality, pitches=_chord_pitches(s.root_pc, s.quality))
            for s in sketch.spans]
  sections = [dict(start=round(clock.warp(a), 4), end=round(clock.warp(b), 4), pattern=p)
              for a, b, p in sketch.sections]
  return Song(
      name=song_name(seed, index),
      tempo=tempo,
      key=f"{NOTE_NAMES[tonic_pc]} {mode}",
      time_signature=(sketch.beats_per_bar, 4),
      duration=duration,
      parts=parts,
      chords=chords,
      bass_sections=sections,
      meta=dict(source="procedural", seed=int(seed), index=int(index), groove=groove.name,
                swing=round(swing, 3), programs=programs, styles=styles),
  )
