"""MIDI files of a monophonic bass line: reading a known bass part (writing generated notes is
`bassgen.notes.notes_to_midi`, re-exported here)."""
from __future__ import annotations

import os
import pathlib

from bassgen.errors import BassgenError
from bassgen.notes import Note, notes_to_midi  # noqa: F401


def read_midi_notes(path: str | os.PathLike, *, bass_only: bool = True) -> list[Note]:
  """Notes of a MIDI file: the GM bass programs (32-39) only, or every non-drum part."""
  import pretty_midi  # pylint: disable=g-import-not-at-top

  path = pathlib.Path(path)
  if not path.is_file():
    raise BassgenError(f"{path}: no such MIDI file. Check the path.")
  try:
    pm = pretty_midi.PrettyMIDI(str(path))
  except Exception as e:  # pretty_midi/mido raise many types for bad files
    raise BassgenError(f"{path}: not a readable MIDI file ({type(e).__name__}). "
                       "Give a standard .mid file.") from None
  parts = [i for i in pm.instruments if not i.is_drum and (not bass_only or 32 <= i.program <= 39)]
  if not parts:
    raise BassgenError(f"{path}: no {'bass (GM program 32-39) ' if bass_only else ''}part found. "
                       "Give the bass part's MIDI, or pass bass_only=False.")
  notes = [Note(float(n.start), float(n.end), int(n.pitch), int(n.velocity))
           for i in parts for n in i.notes]
  return sorted(notes, key=lambda n: (n.onset, n.pitch))
