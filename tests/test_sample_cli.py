"""`bassgen sample`: what a musician runs. Runs on a bundle of runlocal models with random weights
(the behaviour under test does not depend on training)."""
import pathlib

import numpy as np
import pytest
import soundfile as sf

from bassgen import cli
from fixtures import make_random_bundle

ROOT = pathlib.Path(__file__).parents[1]
SR = 8000


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
  return make_random_bundle(tmp_path_factory.mktemp("bundle"))


def _mix(path, seconds=2.0, sr=SR, channels=1, seed=0):
  rng = np.random.default_rng(seed)
  n = int(seconds * sr)
  t = np.arange(n) / sr
  x = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(n)
  x = np.stack([x] * channels, 1) if channels > 1 else x
  sf.write(path, x.astype(np.float32), sr)
  return path


def _linked_files(page):
  """The files an HTML page's src/href attributes point at, resolved against the page's URL as a
  browser does (percent-decoded; a raw '#' or '?' would start a fragment or a query)."""
  import html.parser
  import urllib.parse
  import urllib.request

  class Links(html.parser.HTMLParser):
    refs = []

    def handle_starttag(self, tag, attrs):
      self.refs += [v for k, v in attrs if k in ("src", "href")]

  parser = Links()
  parser.refs = []
  parser.feed(page.read_text(encoding="utf-8"))
  files = []
  for ref in parser.refs:
    url = urllib.parse.urlsplit(urllib.parse.urljoin(page.resolve().as_uri(), ref))
    assert url.scheme == "file" and not url.query and not url.fragment, ref
    files.append(pathlib.Path(urllib.request.url2pathname(url.path)))
  return files


def _sample(args, capsys):
  code = cli.main(["sample"] + [str(a) for a in args])
  captured = capsys.readouterr()
  return code, captured.out, captured.err


def test_sample_writes_everything(bundle, tmp_path, capsys):
  mix = _mix(tmp_path / "song.wav")
  out = tmp_path / "out"
  code, stdout, err = _sample([mix, "--checkpoint", bundle, "--out", out, "--steps", 4], capsys)
  assert code == 0, err
  bass, sr = sf.read(out / "song.bass.wav")
  assert sr == SR and len(bass) == int(2.0 * SR)
  assert np.all(np.isfinite(bass))
  for name in ("song.with_bass.wav", "song.bass.mid", "song.png", "index.html", "song.mix.wav"):
    assert (out / name).is_file(), name
  links = _linked_files(out / "index.html")
  assert sorted(links) == sorted(p for p in out.resolve().iterdir() if p.name != "index.html")
  assert "results are in" in stdout


def test_same_seed_same_output_and_seeds_differ(bundle, tmp_path, capsys):
  mix = _mix(tmp_path / "a.wav", seconds=1.5)
  outs = {}
  for name, seed in (("x", 3), ("y", 3), ("z", 4)):
    code, _, err = _sample([mix, "--checkpoint", bundle, "--out", tmp_path / name, "--seed", seed,
                            "--steps", 3], capsys)
    assert code == 0, err
    outs[name] = sf.read(tmp_path / name / "a.bass.wav")[0]
  np.testing.assert_array_equal(outs["x"], outs["y"])
  # A real difference, not a rounding one: the two seeds' basses are far from proportional.
  assert np.std(outs["x"]) > 0 and np.std(outs["z"]) > 0
  assert abs(np.corrcoef(outs["x"], outs["z"])[0, 1]) < 0.9


@pytest.mark.parametrize("sr,channels", [(8000, 8), (192000, 1), (44100, 2)])
def test_any_rate_and_channels_work(bundle, tmp_path, capsys, sr, channels):
  mix = _mix(tmp_path / "m.flac" if sr <= 96000 else tmp_path / "m.wav", seconds=1.0, sr=sr,
             channels=channels)
  code, _, err = _sample([mix, "--checkpoint", bundle, "--out", tmp_path / "o", "--steps", 2],
                         capsys)
  assert code == 0, err
  bass, got_sr = sf.read(tmp_path / "o" / "m.bass.wav")
  assert got_sr == sr and len(bass) == sr


def _bad_inputs(tmp):
  empty = tmp / "empty.wav"
  empty.write_bytes(b"")
  text = tmp / "notes.wav"
  text.write_text("not audio at all")
  good = _mix(tmp / "good.wav")
  truncated = tmp / "truncated.wav"
  truncated.write_bytes(good.read_bytes()[:30])
  cut = tmp / "cut.wav"   # the header says 2 s, the data stops after about 1 s
  cut.write_bytes(good.read_bytes()[:len(good.read_bytes()) // 2])
  nan = tmp / "nan.wav"
  sf.write(nan, np.full(4000, np.nan, np.float32), SR, subtype="FLOAT")
  one = tmp / "one.wav"
  sf.write(one, np.zeros(1, np.float32), SR)
  folder = tmp / "nothing_here"
  folder.mkdir()
  (folder / "readme.txt").write_text("hi")
  return {"missing": tmp / "missing.wav", "empty": empty, "non-audio": text,
          "truncated": truncated, "cut mid-data": cut, "nan": nan, "one-sample": one, "empty folder": folder}


def test_bad_inputs_fail_cleanly_and_write_nothing(bundle, tmp_path, capsys):
  for label, path in _bad_inputs(tmp_path).items():
    out = tmp_path / f"out_{label.replace(' ', '_')}"
    code, _, err = _sample([path, "--checkpoint", bundle, "--out", out], capsys)
    assert code != 0, label
    lines = [l for l in err.strip().splitlines() if l]
    assert len(lines) == 1 and "Traceback" not in err, (label, err)
    assert str(path.name) in err, (label, err)
    assert not out.exists() or not any(out.iterdir()), label


def test_wav_cut_mid_data_says_how_much_is_missing(bundle, tmp_path, capsys):
  cut = _bad_inputs(tmp_path)["cut mid-data"]
  code, _, err = _sample([cut, "--checkpoint", bundle, "--out", tmp_path / "o"], capsys)
  assert code == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
  held = sf.info(cut).frames
  assert f"{cut}: truncated: the header says {int(2.0 * SR)} frames, the file holds {held}" in err
  assert f"{int(2.0 * SR) - held} frames" in err and "missing" in err
  assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_folder_with_good_and_bad_files_generates_nothing(bundle, tmp_path, capsys):
  bad = _bad_inputs(tmp_path)
  for label in ("cut mid-data", "non-audio"):
    folder = tmp_path / f"songs_{label.replace(' ', '_')}"
    folder.mkdir()
    _mix(folder / "a_good.wav")
    (folder / bad[label].name).write_bytes(bad[label].read_bytes())
    _mix(folder / "z_good.wav")
    out = tmp_path / f"out_{folder.name}"
    code, stdout, err = _sample([folder, "--checkpoint", bundle, "--out", out], capsys)
    assert code == 1 and "Traceback" not in err, (label, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(folder / bad[label].name) in lines[0], (label, err)
    assert "a_good" not in err and "z_good" not in err and "[1/" not in stdout, (label, stdout)
    assert not out.exists() or not any(out.iterdir()), label


def test_mp3_ogg_and_awkward_file_names_sample_and_link(bundle, tmp_path, capsys):
  """MP3 and OGG input, and names with '#', '?', '%', spaces, '&' and non-ASCII letters: every
  output is written under the input's name and index.html's links resolve to them."""
  inputs = {"take #1?.mp3": ("MP3", "MPEG_LAYER_III"), "50%41 café.ogg": ("OGG", "VORBIS"),
            "Ünïcødé & <bass>.wav": ("WAV", "PCM_16")}
  t = np.arange(int(1.0 * 16000)) / 16000
  x = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
  for name, (fmt, subtype) in inputs.items():
    sf.write(tmp_path / name, x, 16000, format=fmt, subtype=subtype)
  out = tmp_path / "out"
  code, _, err = _sample([tmp_path / n for n in inputs] + ["--checkpoint", bundle, "--out", out,
                                                          "--steps", 2], capsys)
  assert code == 0, err
  for name in inputs:
    stem = pathlib.Path(name).stem
    want, want_sr = sf.read(tmp_path / name)
    bass, sr = sf.read(out / f"{stem}.bass.wav")
    assert sr == want_sr and len(bass) == len(want), name
    for suffix in (".with_bass.wav", ".bass.mid", ".png", ".mix.wav"):
      assert (out / f"{stem}{suffix}").is_file(), (name, suffix)
  links = _linked_files(out / "index.html")
  assert sorted(links) == sorted(p for p in out.resolve().iterdir() if p.name != "index.html")


@pytest.mark.parametrize("stage", ["notes_to_midi", "spectrogram_png"])
def test_a_failing_stage_leaves_no_partial_output(bundle, tmp_path, capsys, monkeypatch, stage):
  """The second input's MIDI (or picture) stage crashes: the first input's outputs are complete,
  the second's are absent (not half-written), and no temporary files are left."""
  from bassgen import notes, report
  module = notes if stage == "notes_to_midi" else report
  real, calls = getattr(module, stage), []

  def crashes_on_second_input(*args, **kwargs):
    calls.append(args)
    if len(calls) == 2:
      raise RuntimeError(f"{stage} crashed")
    return real(*args, **kwargs)

  monkeypatch.setattr(module, stage, crashes_on_second_input)
  a, b = _mix(tmp_path / "a.wav", seconds=1.0), _mix(tmp_path / "b.wav", seconds=1.0, seed=1)
  out = tmp_path / "out"
  with pytest.raises(RuntimeError, match="crashed"):
    cli.main(["sample", str(a), str(b), "--checkpoint", str(bundle), "--out", str(out),
              "--steps", "2"])
  assert sorted(p.name for p in out.iterdir()) == sorted(
      f"a{s}" for s in (".bass.wav", ".with_bass.wav", ".bass.mid", ".png", ".mix.wav"))
  assert sf.read(out / "a.bass.wav")[0].shape == (SR,)


def test_unknown_checkpoint_existing_output_and_unwritable_folder(bundle, tmp_path, capsys):
  mix = _mix(tmp_path / "s.wav")
  code, _, err = _sample([mix, "--checkpoint", tmp_path / "nope", "--out", tmp_path / "o1"], capsys)
  assert code != 0 and "nope" in err and len(err.strip().splitlines()) == 1
  out = tmp_path / "o2"
  out.mkdir()
  (out / "s.bass.wav").write_bytes(b"keep me")
  code, _, err = _sample([mix, "--checkpoint", bundle, "--out", out], capsys)
  assert code != 0 and "--overwrite" in err
  assert (out / "s.bass.wav").read_bytes() == b"keep me"
  assert sorted(p.name for p in out.iterdir()) == ["s.bass.wav"]
  locked = tmp_path / "locked"
  locked.write_text("a file where a folder should be")
  code, _, err = _sample([mix, "--checkpoint", bundle, "--out", locked / "sub"], capsys)
  assert code != 0 and len(err.strip().splitlines()) == 1


def test_silent_mix_warns_but_works(bundle, tmp_path, capsys):
  silent = tmp_path / "quiet.wav"
  sf.write(silent, np.zeros(SR, np.float32), SR)
  code, _, err = _sample([silent, "--checkpoint", bundle, "--out", tmp_path / "o", "--steps", 2],
                         capsys)
  assert code == 0 and "silent" in err
  assert (tmp_path / "o" / "quiet.bass.wav").is_file()


def test_regenerate_keeps_bass_outside_region(bundle, tmp_path, capsys):
  mix = _mix(tmp_path / "r.wav", seconds=3.0)
  keep = tmp_path / "keep.wav"
  t = np.arange(3 * SR) / SR
  kept = (0.3 * np.sin(2 * np.pi * 55 * t)).astype(np.float32)
  sf.write(keep, kept, SR, subtype="FLOAT")
  code, _, err = _sample([mix, "--checkpoint", bundle, "--out", tmp_path / "o", "--steps", 3,
                          "--keep-bass", keep, "--regenerate", "1:2"], capsys)
  assert code == 0, err
  bass = sf.read(tmp_path / "o" / "r.bass.wav")[0]
  outside = np.r_[0:int(0.9 * SR), int(2.1 * SR):3 * SR]
  np.testing.assert_allclose(bass[outside], kept[outside], atol=1e-4)
  # No click at the joins: sample-to-sample steps stay small around both borders.
  for edge in (1.0, 2.0):
    seg = bass[int((edge - 0.1) * SR):int((edge + 0.1) * SR)]
    assert np.max(np.abs(np.diff(seg))) < 0.2


def test_wave_to_wave_is_one_jitted_function_that_matches_generate(bundle, monkeypatch):
  """encode → sample → decode inside one jit gives the chunked path's bass; one trace per bucket."""
  import chex
  from bassgen import generation
  gen = generation.BassGenerator.load(bundle)
  n = 32 * gen.codec.samples_per_latent  # exactly one length bucket: no padding to differ on
  t = np.arange(n) / gen.sample_rate
  mix = (0.3 * np.sin(2 * np.pi * 110 * t) * (1 + np.sin(2 * np.pi * 2 * t))).astype(np.float32)
  opts = generation.SampleOptions(steps=4, seed=1, num_samples=2)
  chunked = np.stack(gen.generate(mix, gen.sample_rate, options=opts))
  chex.clear_trace_counter()
  monkeypatch.setattr(generation.samplers, "sample",
                      chex.assert_max_traces(generation.samplers.sample, n=1))
  one = gen.wave_to_wave(mix, gen.sample_rate, options=opts)
  assert one.shape == chunked.shape == (2, n)
  rel = np.linalg.norm(one - chunked) / np.linalg.norm(chunked)
  assert rel < 0.02, rel
  # Another seed and a shorter mix in the same bucket reuse the compiled function.
  other = gen.wave_to_wave(mix[: n - 3000], gen.sample_rate,
                           options=generation.SampleOptions(steps=4, seed=2, num_samples=2))
  assert other.shape == (2, n - 3000) and np.all(np.isfinite(other))


def test_progress_bar_counts_sampler_steps(bundle, capsys):
  from bassgen import generation
  gen = generation.BassGenerator.load(bundle)
  mix = np.random.default_rng(0).standard_normal(gen.sample_rate).astype(np.float32) * 0.1
  with generation.samplers.progress_bar(5, "outer") as outer:
    gen.generate(mix, gen.sample_rate, options=generation.SampleOptions(steps=5), progress=outer)
  assert outer.n == 5  # each step of the jitted loop reported once
  gen.generate(mix, gen.sample_rate, options=generation.SampleOptions(steps=5),
               progress="song: sampling")
  err = capsys.readouterr().err
  assert "song: sampling" in err and "/5 [" in err


def _chromium():
  import shutil
  for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
    path = shutil.which(name)
    if path:
      return path
  return None


@pytest.mark.skipif(_chromium() is None, reason="Chromium is not installed (checks index.html "
                    "in a real browser when it is)")
def test_index_html_audio_loads_in_headless_chromium(bundle, tmp_path, capsys):
  import re
  import subprocess
  mix = _mix(tmp_path / "song #1? 50%41 ü.wav")   # the links must be URL-encoded to load
  out = tmp_path / "out"
  code, _, err = _sample([mix, "--checkpoint", bundle, "--out", out, "--steps", 2], capsys)
  assert code == 0, err
  dom = subprocess.run(
      [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
       "--virtual-time-budget=10000", "--dump-dom", (out / "index.html").resolve().as_uri()],
      capture_output=True, text=True, timeout=120, check=True).stdout
  players = re.findall(r"<audio[^>]*>", dom)
  assert len(players) == 3  # mix, bass, mix + bass
  assert all('data-state="loaded"' in p for p in players), players


def test_bundle_packs_float16_weights_and_stores_sampler_defaults(bundle, tmp_path, capsys):
  from bassgen.generation import BassGenerator
  out = tmp_path / "b"
  code = cli.main(["bundle", "--autoencoder", str(bundle / "autoencoder"), "--ldm",
                   str(bundle / "ldm"), "--out", str(out), "--sample", "guidance_w=5",
                   "--sample", "sampler=heun"])
  assert code == 0, capsys.readouterr().err
  packed, orig = BassGenerator.load(out), BassGenerator.load(bundle)
  assert packed.cfg.sample.guidance_w == 5 and packed.cfg.sample.sampler == "heun"
  import jax
  for a, b in zip(jax.tree.leaves(packed.params), jax.tree.leaves(orig.params)):
    np.testing.assert_allclose(np.asarray(a, np.float32), b, rtol=1e-3, atol=1e-4)
  # Without --autoencoder the bundle's autoencoder is kept as it is; a bad key is one error line.
  before = sorted(p.stat().st_mtime_ns for p in (out / "autoencoder").rglob("*") if p.is_file())
  assert cli.main(["bundle", "--ldm", str(bundle / "ldm"), "--out", str(out)]) == 0
  after = sorted(p.stat().st_mtime_ns for p in (out / "autoencoder").rglob("*") if p.is_file())
  assert before == after
  assert BassGenerator.load(out).cfg.sample.guidance_w == orig.cfg.sample.guidance_w
  capsys.readouterr()
  assert cli.main(["bundle", "--ldm", str(bundle / "ldm"), "--out", str(out), "--sample",
                   "guidance=3"]) == 1
  assert "not a sampler setting" in capsys.readouterr().err


def test_sampler_on_a_mesh_splits_variants_and_weights_like_training(bundle, tmp_path, monkeypatch):
  """`BassGenerator.load(bundle, mesh=...)`: on a 2 x 4 (data x fsdp) mesh the weights are laid
  out by the training rules (large ones split over fsdp, small ones whole), 8 variants are split
  one per device, and the latents equal one device's."""
  import jax
  from jax.sharding import PartitionSpec as P
  from bassgen import generation, sharding
  mix = np.asarray(sf.read(_mix(tmp_path / "m.wav", seconds=2.0))[0], np.float32)
  opts = generation.SampleOptions(num_samples=8, steps=3, seed=5)
  one = generation.BassGenerator.load(bundle)
  mesh = sharding.make_mesh((2, 4))
  many = generation.BassGenerator.load(bundle, mesh=mesh)
  seen = []
  real_sampler = many._sampler

  def spy_sampler(*args):
    fn = real_sampler(*args)

    def spied(state, cond, *rest, **kw):
      seen.append(cond.sharding)
      return fn(state, cond, *rest, **kw)
    return spied

  monkeypatch.setattr(many, "_sampler", spy_sampler)
  z_one = one.sample_latents(mix, SR, options=opts)
  z_many = many.sample_latents(mix, SR, options=opts)
  np.testing.assert_allclose(z_many, z_one, rtol=1e-4, atol=1e-4)
  assert np.std(z_one[0] - z_one[1]) > 0.1   # the variants differ: a real batch, split over 8
  assert seen and seen[0].spec == P(sharding.BATCH_AXES, None, None)
  assert seen[0].mesh.shape == mesh.shape
  leaves = jax.tree.leaves(many.params)
  split = [x for x in leaves if not x.sharding.is_fully_replicated]
  whole = [x for x in leaves if x.sharding.is_fully_replicated]
  assert len(split) >= 10 and all("fsdp" in x.sharding.spec for x in split)
  assert all(x.size >= many.cfg.mesh.min_shard_size for x in split)
  assert any(x.size < many.cfg.mesh.min_shard_size for x in whole)
  assert all(x.sharding.is_fully_replicated for x in jax.tree.leaves(one.params))
