"""Bass f0 tracking and note transcription on synthesised bass lines with known notes."""
import numpy as np
import pytest

import fixtures
from bassgen.errors import BassgenError
from bassgen.evaluation import pitch as P
from bassgen.evaluation import midi as M
from bassgen.evaluation import synthetic as S

SR = 16000
# Low E1 (41.2 Hz, below swift-f0's own 46.9 Hz floor) up to E3; a repeated note without a gap.
LINE = [P.Note(0.2, 0.5, 28), P.Note(0.6, 0.9, 45), P.Note(1.0, 1.3, 43), P.Note(1.4, 1.8, 40),
        P.Note(1.8, 2.1, 40), P.Note(2.2, 2.5, 52), P.Note(2.6, 2.9, 36)]
# swift-f0 is the `eval` extra: without it its cases are reported as skipped, not left out.
TRACKERS = ["pyin", pytest.param("swift-f0", marks=pytest.mark.skipif(
    not P.swift_f0_available(), reason="swift-f0 is not installed (pip install -e .[eval])"))]


@pytest.fixture(scope="module")
def line_wav():
  return S.bass_line(LINE, SR, duration=3.2)


def _expected_midi(times):
  ref = P.notes_to_track(LINE, times)
  return ref.voiced, ref.midi


@pytest.mark.parametrize("tracker", TRACKERS)
def test_track_follows_the_notes_including_low_e(line_wav, tracker):
  track = P.track_pitch(line_wav, SR, tracker=tracker)
  assert track.times[0] == 0.0 and track.times[-1] == pytest.approx(3.2, abs=0.05)
  ref_voiced, ref_midi = _expected_midi(track.times)
  both = ref_voiced & track.voiced
  assert both.sum() > 0.8 * ref_voiced.sum()                      # the notes are found
  assert np.mean(np.abs(track.midi[both] - ref_midi[both]) < 0.5) > 0.97   # at the right pitch
  low_e = (track.times > 0.25) & (track.times < 0.45)
  assert np.nanmedian(track.f0_hz[low_e]) == pytest.approx(41.2, rel=0.02)
  silent = (track.times < 0.1) | (track.times > 3.05)
  assert not track.voiced[silent].any() and np.isnan(track.f0_hz[~track.voiced]).all()


@pytest.mark.parametrize("tracker", TRACKERS)
def test_transcription_recovers_the_notes(line_wav, tracker):
  fixtures.assert_notes_match(P.transcribe_bass(line_wav, SR, tracker=tracker), LINE)


def test_silence_gives_no_notes():
  silence = np.zeros(SR)
  track = P.track_pitch(silence, SR, tracker="pyin")
  assert not track.voiced.any()
  assert P.transcribe_bass(silence, SR, tracker="pyin") == []


def test_f0_to_notes_segments_a_constructed_track():
  hop = 0.01
  times = np.arange(100) * hop
  midi = np.full(100, np.nan)
  midi[10:40] = 40.2          # a note, slightly sharp
  midi[25] = 52.0             # a one-frame octave blip inside it: absorbed
  midi[43:60] = 40.0          # same pitch after a 30 ms dropout: bridged
  midi[60:80] = 47.0
  midi[90:92] = 55.0          # an isolated 20 ms blip: dropped
  voiced = np.isfinite(midi)
  track = P.PitchTrack(times, np.where(voiced, P.midi_to_hz(midi), np.nan), voiced,
                       voiced.astype(float))
  notes = P.f0_to_notes(track, min_note_s=0.05, max_gap_s=0.04)
  assert [(round(n.onset, 3), round(n.offset, 3), n.pitch) for n in notes] == [
      (0.095, 0.595, 40), (0.595, 0.795, 47)]
  # A detected onset in the dropout means the same pitch was played again.
  split = P.f0_to_notes(track, min_note_s=0.05, max_gap_s=0.04, split_times=[0.43])
  assert [(round(n.onset, 3), n.pitch) for n in split] == [(0.095, 40), (0.43, 40), (0.595, 47)]
  assert split[0].offset <= split[1].onset


def test_midi_round_trip(tmp_path):
  path = M.notes_to_midi(LINE, tmp_path / "bass.mid")
  back = M.read_midi_notes(path)
  assert [(n.pitch, round(n.onset, 3), round(n.offset, 3)) for n in back] == [
      (n.pitch, n.onset, n.offset) for n in LINE]
  with pytest.raises(BassgenError, match="already exists"):
    M.notes_to_midi(LINE, path)
  M.notes_to_midi(LINE[:2], path, overwrite=True)
  assert len(M.read_midi_notes(path)) == 2
  piano = M.notes_to_midi(LINE, tmp_path / "piano.mid", program=0)
  with pytest.raises(BassgenError, match="no bass"):
    M.read_midi_notes(piano)
  assert len(M.read_midi_notes(piano, bass_only=False)) == len(LINE)


def test_song_json_notes_are_accepted_and_bad_ones_explained():
  notes = P.as_notes([{"start": 0.5, "end": 1.0, "pitch": 40, "velocity": 90}])
  assert notes == [P.Note(0.5, 1.0, 40, 90)]
  with pytest.raises(BassgenError, match="'start', 'end' and 'pitch'"):
    P.as_notes([{"time": 0.5}])


def test_bad_options_raise_one_clear_error():
  with pytest.raises(BassgenError, match="tracker"):
    P.track_pitch(np.zeros(SR), SR, tracker="crepe")
  with pytest.raises(BassgenError, match="fmin"):
    P.track_pitch(np.zeros(SR), SR, tracker="pyin", fmin=500.0, fmax=400.0)
  assert P.resolve_tracker("auto") == ("swift-f0" if P.swift_f0_available() else "pyin")


def test_notes_are_always_valid_midi_events():
  rng = np.random.default_rng(0)
  times = np.arange(400) * 0.008
  for _ in range(30):
    midi = np.repeat(rng.integers(28, 55, 40).astype(float), 10) + rng.normal(0, 0.2, 400)
    midi[rng.random(400) < 0.15] = np.nan
    voiced = np.isfinite(midi)
    track = P.PitchTrack(times, np.where(voiced, P.midi_to_hz(midi), np.nan), voiced,
                         voiced.astype(float))
    notes = P.f0_to_notes(track, split_times=np.sort(rng.uniform(0, 3.2, 25)))
    assert notes
    for a, b in zip(notes, notes[1:]):
      assert a.offset <= b.onset
    assert all(n.offset - n.onset >= 0.06 - 1e-9 for n in notes)


def test_swift_f0_missing_is_explained(monkeypatch):
  monkeypatch.setattr(P, "swift_f0_available", lambda: False)
  assert P.resolve_tracker("auto") == "pyin"
  with pytest.raises(BassgenError, match=r"pip install \.\[eval\]"):
    P.track_pitch(np.zeros(SR), SR, tracker="swift-f0")
