"""The generated bass's pitch track, notes, MIDI file and picture (`bassgen sample`'s outputs), on
synthesised bass lines with known notes; chunked analysis equals one pass."""
import numpy as np
import pytest

import fixtures
from bassgen import notes as N
from bassgen import report
from bassgen import transcription as T
from bassgen.evaluation import midi as M
from bassgen.evaluation import synthetic as S
from bassgen.evaluation.pitch import notes_to_track

SR = 16000
# Low E1 (41.2 Hz) up to E3; a repeated note without a gap.
LINE = [N.Note(0.2, 0.5, 28), N.Note(0.6, 0.9, 45), N.Note(1.0, 1.3, 43), N.Note(1.4, 1.8, 40),
        N.Note(1.8, 2.1, 40), N.Note(2.2, 2.5, 52), N.Note(2.6, 2.9, 36)]


@pytest.fixture(scope="module")
def line_wav():
  return S.bass_line(LINE, SR, duration=3.2).astype(np.float32)


def test_track_follows_the_notes_including_low_e(line_wav):
  track = T.track_bass(line_wav, SR)
  p = track.pitch
  assert p.times[0] == 0.0 and p.times[-1] == pytest.approx(3.2, abs=0.02)
  assert len(p.times) == T.num_frames(len(line_wav), SR)
  ref = notes_to_track(LINE, p.times)
  both = ref.voiced & p.voiced
  assert both.sum() > 0.85 * ref.voiced.sum()
  assert np.mean(np.abs(p.midi[both] - ref.midi[both]) < 0.5) > 0.97
  assert np.median(np.abs(p.midi[both] - ref.midi[both])) < 0.05   # in tune to a few cents
  low_e = (p.times > 0.25) & (p.times < 0.45)
  assert np.nanmedian(p.f0_hz[low_e]) == pytest.approx(41.2, rel=0.01)
  silent = (p.times < 0.15) | (p.times > 3.0)
  assert not p.voiced[silent].any() and np.isnan(p.f0_hz[~p.voiced]).all()


def test_transcription_recovers_the_notes(line_wav):
  fixtures.assert_notes_match(T.transcribe(T.track_bass(line_wav, SR)), LINE)


def test_louder_notes_get_higher_velocity():
  quiet = S.bass_line(LINE[:2], SR, duration=1.0, amplitude=0.05)
  loud = S.bass_line(LINE[:2], SR, duration=1.0, amplitude=0.5)
  vq = [n.velocity for n in T.transcribe(T.track_bass(quiet, SR))]
  vl = [n.velocity for n in T.transcribe(T.track_bass(loud, SR))]
  assert len(vq) == len(vl) == 2 and all(b - a > 30 for a, b in zip(vq, vl))


def test_silence_gives_no_notes():
  track = T.track_bass(np.zeros(SR, np.float32), SR)
  assert not track.pitch.voiced.any() and T.transcribe(track) == []


@pytest.mark.parametrize("sr", [8000, 44100])
def test_any_rate_gives_the_same_frames(line_wav, sr):
  from bassgen.data.audio import resample
  other = T.track_bass(resample(line_wav, SR, sr), sr)
  base = T.track_bass(line_wav, SR)
  assert len(other.times) == len(base.times)
  both = other.pitch.voiced & base.pitch.voiced
  assert both.sum() > 0.9 * base.pitch.voiced.sum()
  assert np.median(np.abs(other.pitch.midi[both] - base.pitch.midi[both])) < 0.05


@pytest.mark.parametrize("block", [1, 7, 64])
def test_chunked_tracking_equals_one_pass(line_wav, block):
  one = T.track_bass(line_wav, SR, block_frames=10**9)
  chunked = T.track_bass(line_wav, SR, block_frames=block)
  np.testing.assert_array_equal(chunked.times, one.times)
  np.testing.assert_array_equal(chunked.pitch.voiced, one.pitch.voiced)
  np.testing.assert_allclose(chunked.pitch.f0_hz, one.pitch.f0_hz, rtol=1e-9)
  np.testing.assert_allclose(chunked.level_db, one.level_db, atol=1e-9)
  assert T.transcribe(chunked) == T.transcribe(one)


def _mix(seconds, sr=SR):
  t = np.arange(int(seconds * sr)) / sr
  chords = [(0.0, seconds / 2, S.triad(57)), (seconds / 2, seconds, S.triad(62, minor=True))]
  return (S.chord_pad(chords, sr, duration=seconds) + 0.05 * np.sin(2 * np.pi * 3000 * t)
          ).astype(np.float32)


@pytest.mark.parametrize("block", [1, 5, 33])
def test_chunked_picture_equals_one_pass(line_wav, block):
  mix = _mix(3.2)
  track = T.track_bass(line_wav, SR)
  notes = T.transcribe(track)
  one = report.picture(mix, SR, track, notes, block_frames=10**9)
  np.testing.assert_array_equal(report.picture(mix, SR, track, notes, block_frames=block), one)


def test_picture_shows_the_notes_and_the_mix(tmp_path, line_wav):
  from PIL import Image
  mix = _mix(3.2)
  track = T.track_bass(line_wav, SR)
  notes = T.transcribe(track)
  path = report.spectrogram_png(tmp_path / "p.png", mix, SR, track, notes, title="song ü")
  img = Image.open(path)
  assert img.format == "PNG" and img.mode == "RGB" and img.info.get("Title") == "song ü"
  rgb = np.asarray(img)
  assert rgb.shape[1] == report.MIN_WIDTH   # 3.2 s: the narrowest picture
  roll = rgb[report.MIX_ROWS + 2:]
  rows = roll.shape[0]
  for n in notes:   # each note's bar is lit in its row, in the middle of its span
    r = rows - 1 - (n.pitch - report.ROLL_LOW) * report.ROLL_PX - report.ROLL_PX // 2
    c = int((n.onset + n.offset) / 2 / 3.2 * rgb.shape[1])
    assert roll[r, c].max() > 100, n
  # The mix's A3 triad (220 Hz and up) lights its band more than the empty band below 60 Hz.
  top = rgb[: report.MIX_ROWS].astype(float).sum(-1)
  assert top[-20:].mean() < top[report.MIX_ROWS // 2 - 20: report.MIX_ROWS // 2].mean()


def test_long_picture_keeps_its_width():
  n = 600 * 8000
  track = T.track_bass(np.zeros(8000, np.float32), 8000)
  rgb = report.picture(np.zeros(n, np.float32), 8000, track, [])
  assert rgb.shape[1] == report.MAX_WIDTH


def test_midi_file_reads_back(tmp_path):
  path = N.notes_to_midi(LINE, tmp_path / "bass.mid")
  back = M.read_midi_notes(path)
  assert [(n.pitch, round(n.onset, 3), round(n.offset, 3)) for n in back] == [
      (n.pitch, n.onset, n.offset) for n in LINE]
  assert N.midi_name(28) == "E1" and N.midi_name(61) == "C#4"
