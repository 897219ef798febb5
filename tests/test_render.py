"""The offline multitrack renderer: determinism, folder contents, bass alignment, resume, chorales."""
import argparse
import json
import os
import pathlib

import numpy as np
import pytest
import soundfile as sf

from bassgen.data import render, render_chorales, render_songs, synth
from bassgen.errors import BassgenError

SR = 16000


def _read_int16(path):
  data, sr = sf.read(path, dtype="int16")
  assert sr == SR
  return data.astype(np.int64)


@pytest.fixture(scope="module")
def songs(tmp_path_factory):
  out = tmp_path_factory.mktemp("songs")
  return render.render_songs(out, 2, seed=11, sample_rate=SR, workers=1)


@pytest.fixture(scope="module")
def chorale(tmp_path_factory):
  out = tmp_path_factory.mktemp("chorales")
  (path,) = render.render_chorales(out, split="test", sample_rate=SR, workers=1, limit=1)
  return path


def _files(folder):
  return {p.name: p.read_bytes() for p in sorted(pathlib.Path(folder).iterdir())}


def test_same_seed_gives_identical_files_with_any_worker_count(songs, tmp_path):
  again = render.render_songs(tmp_path / "again", 2, seed=11, sample_rate=SR, workers=2)
  assert [p.name for p in again] == [p.name for p in songs] == ["song_000011_00000",
                                                                 "song_000011_00001"]
  for a, b in zip(songs, again):
    assert _files(a) == _files(b)


def test_different_seed_gives_different_songs(songs, tmp_path):
  (other,) = render.render_songs(tmp_path, 1, seed=12, sample_rate=SR, workers=1)
  assert other.name == "song_000012_00000"
  a, b = _files(songs[0]), _files(other)
  assert a["bass.wav"] != b["bass.wav"] and a["mix.wav"] != b["mix.wav"]
  assert json.loads(a["song.json"])["bass_notes"] != json.loads(b["song.json"])["bass_notes"]


def test_song_does_not_depend_on_the_other_songs():
  later_first = render_songs.compose_song(3, 7)
  for i in range(7):
    render_songs.compose_song(3, i)
  assert render_songs.compose_song(3, 7) == later_first


@pytest.mark.parametrize("which", [0, 1, "chorale"])
def test_folder_holds_equal_length_stems_whose_sum_is_the_mix(songs, chorale, which):
  folder = chorale if which == "chorale" else songs[which]
  meta = json.loads((folder / "song.json").read_text())
  wavs = sorted(p.name for p in folder.glob("*.wav"))
  assert wavs == sorted([f"{s}.wav" for s in meta["stems"]] + ["mix.wav"])
  assert "bass" in meta["stems"] and len(meta["stems"]) >= 3
  stems = {}
  for name in meta["stems"] + ["mix"]:
    info = sf.info(folder / f"{name}.wav")
    assert (info.channels, info.samplerate, info.subtype) == (1, SR, "PCM_16")
    assert info.frames == meta["num_samples"]
    stems[name] = _read_int16(folder / f"{name}.wav")
  total = sum(stems[s] for s in meta["stems"])
  assert np.abs(stems["mix"] - total).max() <= 1  # one int16 rounding
  assert np.abs(stems["mix"]).max() <= 0.99 * 32768  # no clipping
  assert 0 < meta["scale"] <= 1 and meta["duration"] == meta["num_samples"] / SR
  assert (folder / "song.mid").stat().st_size > 100


@pytest.mark.parametrize("which", [0, 1, "chorale"])
def test_bass_stem_is_audible_and_not_buried(songs, chorale, which):
  folder = chorale if which == "chorale" else songs[which]
  meta = json.loads((folder / "song.json").read_text())
  rms = {s: np.sqrt(np.mean(sf.read(folder / f"{s}.wav")[0] ** 2)) for s in meta["stems"]}
  assert 20 * np.log10(rms["bass"]) > -40
  loudest_other = max(v for k, v in rms.items() if k != "bass")
  assert 20 * np.log10(rms["bass"] / loudest_other) > -12
  assert all(28 <= n["pitch"] <= 55 for n in meta["bass_notes"]) or which == "chorale"
  assert 32 <= meta["programs"]["bass"] <= 39


def _onsets(wav, sr):
  import librosa  # pylint: disable=g-import-not-at-top
  hop = 32
  env = librosa.onset.onset_strength(y=wav, sr=sr, hop_length=hop, n_fft=1024, n_mels=64,
                                     fmax=2000, lag=2)
  return librosa.onset.onset_detect(onset_envelope=env, sr=sr, hop_length=hop, units="time")


@pytest.mark.parametrize("which", [0, 1, "chorale"])
def test_json_bass_notes_match_the_rendered_bass(songs, chorale, which):
  folder = chorale if which == "chorale" else songs[which]
  meta = json.loads((folder / "song.json").read_text())
  wav, sr = sf.read(folder / "bass.wav", dtype="float32")
  notes = meta["bass_notes"]
  starts = np.array([n["start"] for n in notes])
  detected = _onsets(wav, sr)
  # Every onset heard in the bass stem is a JSON note start (within 30 ms) ...
  dist = np.abs(detected[:, None] - starts[None, :]).min(axis=1)
  assert np.mean(dist <= 0.03) >= 0.9, dist
  # ... and every JSON note that follows 50 ms without bass is heard within 30 ms of its start.
  ends = np.array([n["end"] for n in notes])
  isolated = [s for i, s in enumerate(starts) if i == 0 or s - ends[:i].max() >= 0.05]
  assert len(isolated) >= 3
  miss = [s for s in isolated if np.abs(detected - s).min() > 0.03]
  assert len(miss) <= 0.05 * len(isolated), miss
  # Where the JSON has no bass note (0.7 s after any release), the stem is near silent.
  t = np.arange(wav.shape[0]) / sr
  sounding = np.zeros(wav.shape[0], bool)
  for n in notes:
    sounding |= (t >= n["start"]) & (t < n["end"] + 0.7)
  if (~sounding).sum() > sr // 4:
    assert np.sqrt(np.mean(wav[~sounding] ** 2)) < 0.01 * np.sqrt(np.mean(wav[sounding] ** 2))


def test_song_json_describes_the_song(songs):
  meta = json.loads((songs[0] / "song.json").read_text())
  assert meta["name"] == songs[0].name and meta["source"] == "procedural" and meta["seed"] == 11
  assert 70 <= meta["tempo"] <= 160 and meta["key"].split()[1] in ("major", "minor")
  assert meta["time_signature"] in ("4/4", "3/4")
  assert set(meta["bass_patterns"]) <= set(render_songs.pat.BASS_PATTERNS)
  chords = meta["chords"]
  assert chords[0]["start"] < 0.2 and all(a["end"] == b["start"] for a, b in zip(chords, chords[1:]))
  assert all(c["pitches"][0] % 12 == c["root_pc"] for c in chords)
  assert chords[-1]["end"] < meta["duration"]
  for n in meta["bass_notes"]:
    assert 0 <= n["start"] < n["end"] <= meta["duration"] and 1 <= n["velocity"] <= 127


def test_composition_varies_across_songs():
  songs = [render_songs.compose_song(0, i) for i in range(40)]
  patterns = {s["pattern"] for song in songs for s in song.bass_sections}
  grooves = {song.meta["groove"] for song in songs}
  programs = {song.bass.program for song in songs}
  assert len(patterns - {"ending"}) >= 6 and len(grooves) >= 6 and len(programs) >= 6
  assert any(len({s["pattern"] for s in song.bass_sections} - {"ending"}) > 1 for song in songs)
  assert {len(song.parts) for song in songs} >= {3, 4}
  for song in songs:
    bass = song.bass.notes
    assert all(render_songs.BASS_LOW <= n.pitch <= render_songs.BASS_HIGH for n in bass)
    assert 18 <= song.duration <= 45 and 70 <= song.tempo <= 160
    assert len(song.parts) >= 3 and song.parts[0].name == "bass"
  gaps = [b.start - a.end for song in songs for a, b in zip(song.bass.notes, song.bass.notes[1:])]
  assert max(gaps) > 0.3  # rests
  velocities = [n.velocity for song in songs for n in song.bass.notes]
  assert np.std(velocities) > 5


def test_shared_render_equals_separate_renders():
  sf2 = synth.load_soundfont()
  bass = synth.Part("bass", 33, [synth.Note(33 + i % 5, 0.1 + 0.5 * i, 0.5 + 0.5 * i, 100)
                                 for i in range(8)])
  guitar = synth.Part("guitar", 27, [synth.Note(p, 0.1 + i, 0.9 + i, 90) for i in range(4)
                                     for p in (52, 55, 59)])
  drums = synth.Part("drums", 0, [synth.Note(36 + 6 * (i % 2), 0.1 + 0.25 * i, 0.2 + 0.25 * i, 100)
                                  for i in range(16)], is_drum=True)
  parts = [bass, drums, guitar]
  plan = [tuple((p.name, pan) for p, pan in g) for g in synth.plan_renders(parts, sf2)]
  assert plan in ([(("bass", 0), ("guitar", 127)), (("drums", None),)],
                  [(("guitar", 0), ("bass", 127)), (("drums", None),)])
  kw = dict(tempo=120, end_time=5.0, sample_rate=SR, soundfont=sf2)
  shared = synth.render_parts(parts, **kw)
  alone = synth.render_parts(parts, share=False, **kw)
  for name in ("bass", "guitar", "drums"):
    assert shared[name].shape == alone[name].shape == (5 * SR,)
    assert np.abs(alone[name]).max() > 0.01
    np.testing.assert_allclose(shared[name], alone[name], atol=5e-5)  # < 2 int16 steps


def test_rerun_skips_finished_songs_and_clears_dead_partials(tmp_path):
  (first,) = render.render_songs(tmp_path, 1, seed=4, sample_rate=SR, workers=1)
  stamp = {p.name: p.stat().st_mtime_ns for p in first.iterdir()}
  dead = tmp_path / ".song_000004_00001.partial-999999999"
  dead.mkdir()
  (dead / "bass.wav").write_bytes(b"half")
  results = render.render_songs_results(tmp_path, 2, seed=4, sample_rate=SR, workers=1)
  assert [r.status for r in results] == ["skipped", "rendered"]
  assert {p.name: p.stat().st_mtime_ns for p in first.iterdir()} == stamp
  assert not dead.exists()
  assert sorted(p.name for p in tmp_path.iterdir()) == ["song_000004_00000", "song_000004_00001"]


def test_unfinished_folder_is_not_overwritten(tmp_path):
  (tmp_path / "song_000004_00000").mkdir()
  (tmp_path / "song_000004_00000" / "bass.wav").write_bytes(b"mine")
  with pytest.raises(BassgenError, match="song_000004_00000.*no song.json"):
    render.render_songs(tmp_path, 1, seed=4, sample_rate=SR, workers=1)
  assert (tmp_path / "song_000004_00000" / "bass.wav").read_bytes() == b"mine"


def test_chorale_bass_part_becomes_the_bass_stem(chorale):
  meta = json.loads((chorale / "song.json").read_text())
  assert chorale.name == render_chorales.chorale_name(meta["corpus_path"])
  assert meta["source"] == "chorale" and meta["bass_patterns"] == ["chorale"]
  assert set(meta["stems"]) - {"bass"} <= {"keys", "strings", "organ"}
  assert len(meta["bass_notes"]) > 20 and len(meta["chords"]) > 10
  assert 60 <= meta["tempo"] <= 100


def test_chorale_splits_are_disjoint_and_every_tenth_is_test():
  paths = render_chorales.list_chorales()
  train, test = render_chorales.split_chorales("train"), render_chorales.split_chorales("test")
  assert len(paths) > 300 and all(p.startswith("bach/") for p in paths)
  assert set(train).isdisjoint(test) and sorted(train + test) == list(paths)
  assert test == [p for i, p in enumerate(paths) if i % 10 == 9]
  assert render_chorales.chorale_name("bach/bwv153.1") == "chorale_bwv153_1"


def _cli(argv):
  parser = argparse.ArgumentParser()
  render.add_arguments(parser)
  return render.run(parser.parse_args(argv))


def test_cli_renders_and_reports_user_errors(tmp_path, capsys):
  assert _cli(["--num-songs", "1", "--out", str(tmp_path / "o"), "--sample-rate", "16000",
               "--seed", "2", "--workers", "1"]) == 0
  assert (tmp_path / "o" / "song_000002_00000" / "song.json").is_file()
  assert "rendered 1 tracks" in capsys.readouterr().out
  with pytest.raises(BassgenError, match="--num-songs"):
    _cli(["--out", str(tmp_path / "o")])
  with pytest.raises(BassgenError, match="nope.sf2"):
    _cli(["--num-songs", "1", "--out", str(tmp_path / "p"), "--soundfont", "nope.sf2"])
  bad = tmp_path / "bad.sf2"
  bad.write_bytes(b"not a soundfont")
  with pytest.raises(BassgenError, match="bad.sf2.*SoundFont"):
    _cli(["--num-songs", "1", "--out", str(tmp_path / "p"), "--soundfont", str(bad)])
  with pytest.raises(BassgenError, match="--sample-rate"):
    _cli(["--num-songs", "1", "--out", str(tmp_path / "p"), "--sample-rate", "100"])
  assert not os.path.exists(tmp_path / "p") or not any((tmp_path / "p").iterdir())
