"""`load_config`: overrides parsed by ml_collections (typed and checked), one-line errors."""
import pathlib

import pytest

from bassgen.config_loading import load_config, override, override_flag
from bassgen.errors import BassgenError

CONFIGS = pathlib.Path(__file__).parents[1] / "configs"


def test_overrides_are_typed_by_the_config():
  cfg = load_config(f"{CONFIGS / 'autoencoder.py'}:runlocal",
                    ["optim.lr=3e-4", "config.train.num_steps=7", "--config.train.init_from=",
                     "loss.lowband_fft_sizes=(256, 512)"])
  assert cfg.optim.lr == pytest.approx(3e-4) and isinstance(cfg.optim.lr, float)
  assert cfg.train.num_steps == 7 and isinstance(cfg.train.num_steps, int)
  assert cfg.train.init_from == ""
  assert tuple(cfg.loss.lowband_fft_sizes) == (256, 512)


@pytest.mark.parametrize("override,says", [
    ("optim.lr=fast", "--config.optim.lr"),      # a value of the wrong type is refused
    ("optim.lrr=1e-3", "'optim.lrr'"),           # a field the config does not have
    ("optim.lr", "field.name=value"),            # not an assignment
])
def test_bad_overrides_are_one_line_errors(override, says):
  with pytest.raises(BassgenError) as e:
    load_config(f"{CONFIGS / 'ldm.py'}:runlocal", [override])
  assert says in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_missing_file_and_unknown_variant():
  with pytest.raises(BassgenError, match="no such config file"):
    load_config("configs/nope.py")
  with pytest.raises(BassgenError, match="'huge'"):
    load_config(f"{CONFIGS / 'ldm.py'}:huge")


def test_override_flag_spelling():
  assert override_flag("a.b=1") == override_flag("config.a.b=1") == "--config.a.b=1"
  assert override_flag("--config.a.b=x=y") == "--config.a.b=x=y"


def test_override_of_a_section_is_typed_and_leaves_the_original():
  import ml_collections
  sample = ml_collections.ConfigDict({"guidance_w": 2.0, "sampler": "heun", "steps": 20})
  out = override(sample, ["guidance_w=3", "sample.sampler=euler"], name="sample")
  assert out.guidance_w == 3.0 and out.sampler == "euler" and out.steps == 20
  assert sample.guidance_w == 2.0   # a copy
  with pytest.raises(BassgenError, match="--sample.steps"):
    override(sample, ["steps=many"], name="sample")
