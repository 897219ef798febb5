"""Bach chorales from the music21 corpus as multitrack songs.

Only the chorales are used (the rest of the corpus stays held-out material). The Bass voice becomes
the bass stem, played by a GM bass program an octave down when that keeps it in the bass register;
the other voices are shared out between keys, strings and organ stems. Notes are taken as written,
at one tempo per chorale (60-100 quarter notes per minute); fermatas and repeats are not played.
"""
from __future__ import annotations

import functools
import zlib

import numpy as np

from bassgen.data import render_patterns as pat
from bassgen.data.render_songs import BASS_HIGH, BASS_LOW, BASS_PROGRAMS, PRE_ROLL_S, TAIL_S, Song
from bassgen.data.synth import Note, Part, clean_notes

SPLITS = ("train", "test", "all")
TEST_EVERY = 10  # every 10th chorale (by sorted corpus path) is held out
UPPER_STEMS = {"keys": (0, 1, 4, 6), "strings": (48, 49, 50), "organ": (16, 17, 19, 20)}


class NoBassPart(ValueError):
  """The chorale has no part named Bass."""


@functools.lru_cache(maxsize=1)
def list_chorales() -> tuple[str, ...]:
  """Corpus paths of every Bach chorale in music21's corpus (e.g. 'bach/bwv269'), sorted."""
  from music21 import corpus  # pylint: disable=g-import-not-at-top

  return tuple(sorted(set(corpus.chorales.Iterator(returnType="filename"))))


def split_chorales(split: str) -> list[str]:
  """The chorales of a split: 'test' is every 10th of the sorted list, 'train' the rest."""
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
  paths = list_chorales()
  is_test = [(i % TEST_EVERY) == TEST_EVERY - 1 for i in range(len(paths))]
  return [p for p, t in zip(paths, is_test) if split == "all" or t == (split == "test")]


def chorale_name(corpus_path: str) -> str:
  """'bach/bwv153.1' -> 'chorale_bwv153_1' (a folder name without dots)."""
  return "chorale_" + corpus_path.split("/")[-1].replace(".", "_")


def chord_quality(root_pc: int, pcs: set[int]) -> str:
  """The name in CHORD_INTERVALS whose pitch classes equal `pcs` above `root_pc`, else 'other'."""
  rel = {(pc - root_pc) % 12 for pc in pcs}
  for name, intervals in pat.CHORD_INTERVALS.items():
    if rel == set(intervals):
      return name
  return "other"


def _notes(part, spq: float) -> list[tuple[int, float, float]]:
  out = []
  for n in part.stripTies().flatten().notes:
    ql = float(n.quarterLength)
    if ql <= 0:  # grace notes
      continue
    start = PRE_ROLL_S + float(n.offset) * spq
    for p in n.pitches:
      out.append((int(p.midi), start, start + ql * spq))
  return out


def _bass_shift(pitches: list[int]) -> int:
  """An octave down when that keeps more of the line inside E1-G3."""
  def outside(shift):
    return sum(not BASS_LOW <= p + shift <= BASS_HIGH for p in pitches)
  return -12 if outside(-12) <= outside(0) else 0


def compose_chorale(corpus_path: str, *, seed: int = 0) -> Song:
  """The chorale at `corpus_path` ('bach/bwv269') as a Song; raises NoBassPart without a Bass."""
  from music21 import corpus  # pylint: disable=g-import-not-at-top

  score = corpus.parse(corpus_path)
  name = chorale_name(corpus_path)
  rng = np.random.default_rng([int(seed), zlib.crc32(corpus_path.encode())])
  parts = list(score.parts)
  bass_parts = [p for p in parts if "bass" in str(p.partName or p.id).lower()]
  if not bass_parts:
    raise NoBassPart(f"{corpus_path}: no part named Bass")
  bass_part = bass_parts[-1]
  upper = [p for p in parts if p is not bass_part]

  tempo = float(round(rng.uniform(60, 100), 1))
  spq = 60.0 / tempo
  velocity = float(rng.uniform(70, 100))

  def notes(raw, shift=0):
    return clean_notes([Note(p + shift, round(a, 4), round(b, 4),
                             int(np.clip(round(velocity + rng.normal(0, 6)), 1, 127)))
                        for p, a, b in raw])

  # The bass plays detached (a short gap before each note), as a continuo player would.
  bass_raw = [(p, a, max(a + 0.05, min(b, b - min(0.06, 0.25 * (b - a)))))
              for p, a, b in _notes(bass_part, spq)]
  bass_program = int(rng.choice(BASS_PROGRAMS))
  song_parts = [Part("bass", bass_program, notes(bass_raw, _bass_shift([p for p, _, _ in bass_raw])))]
  programs = {"bass": bass_program}

  # Each upper voice goes to one stem; keep at least two stems.
  stems = list(UPPER_STEMS)
  while True:
    assign = [stems[int(rng.integers(len(stems)))] for _ in upper]
    if len(set(assign)) >= min(2, len(upper)):
      break
  for stem in stems:
    raw = [n for part, s in zip(upper, assign) if s == stem for n in _notes(part, spq)]
    if raw:
      program = int(rng.choice(UPPER_STEMS[stem]))
      song_parts.append(Part(stem, program, notes(sorted(raw, key=lambda n: (n[1], n[0])))))
      programs[stem] = program

  chords = []
  for c in score.chordify().flatten().notes:
    start = PRE_ROLL_S + float(c.offset) * spq
    end = start + float(c.quarterLength) * spq
    pitches = sorted({int(p.midi) for p in c.pitches})
    if chords and chords[-1]["pitches"] == pitches and abs(chords[-1]["end"] - start) < 1e-3:
      chords[-1]["end"] = round(end, 4)
      continue
    root_pc = int(c.root().pitchClass)
    chords.append(dict(start=round(start, 4), end=round(end, 4), root_pc=root_pc,
                       quality=chord_quality(root_pc, {p % 12 for p in pitches}), pitches=pitches))

  time_sigs = score.recurse().getElementsByClass("TimeSignature")
  ts = (time_sigs[0].numerator, time_sigs[0].denominator) if time_sigs else (4, 4)
  last = max(n.end for p in song_parts for n in p.notes)
  duration = round(last + TAIL_S, 3)
  return Song(
      name=name,
      tempo=tempo,
      key=str(score.analyze("key")),
      time_signature=ts,
      duration=duration,
      parts=song_parts,
      chords=chords,
      bass_sections=[dict(start=0.0, end=round(last, 4), pattern="chorale")],
      meta=dict(source="chorale", corpus_path=corpus_path, seed=int(seed), programs=programs,
                voices={str(p.partName or p.id): s for p, s in zip(upper, assign)}),
  )
