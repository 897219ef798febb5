"""Config files and their overrides, parsed by ml_collections' own flag machinery.

`python -m bassgen.main --config=configs/ldm.py:demo --config.optim.lr=3e-4`, `bassgen train
--config configs/ldm.py:demo optim.lr=3e-4` and `load_config("configs/ldm.py:demo",
["optim.lr=3e-4"])` all go through `load_config`: `config_flags.DEFINE_config_file` on a private
`FlagValues`, so an override is typed, checked and parsed exactly as absl would, and a bad one is
reported in one line that names the flag.
"""
from __future__ import annotations

import pathlib
import re
from typing import Sequence

import ml_collections
from absl import flags
from ml_collections import config_flags

from bassgen.errors import BassgenError


def override_flag(item: str, name: str = "config") -> str:
  """`a.b=v`, `NAME.a.b=v` or `--NAME.a.b=v` as the flag `--NAME.a.b=v`."""
  text = item.removeprefix("--").removeprefix(f"{name}.")
  if "=" not in text or not text.split("=", 1)[0]:
    raise BassgenError(f"bad override {item!r}: write it as field.name=value (e.g. optim.lr=3e-4)")
  return f"--{name}.{text}"


def load_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """`spec` is `path/to/config.py` or `path/to/config.py:variant`; `overrides` are `a.b=value`
  (strings parse as absl would on a command line: `train.init_from=` is the empty string)."""
  path = spec.partition(":")[0]
  if not pathlib.Path(path).is_file():
    raise BassgenError(f"{path}: no such config file. Use e.g. configs/autoencoder.py:demo.")
  argv = ["bassgen", f"--config={spec}", *(override_flag(o) for o in overrides)]
  return _parse(argv, "config", lambda values: config_flags.DEFINE_config_file(
      "config", None, "configs/NAME.py[:variant]", flag_values=values, lock_config=False,
      sys_argv=argv))


def override(cfg: ml_collections.ConfigDict, overrides: Sequence[str],
             name: str = "config") -> ml_collections.ConfigDict:
  """A copy of `cfg` with `overrides` (`a.b=value`) applied as `load_config` applies them; errors
  name the flag as `--NAME.a.b`."""
  argv = ["bassgen", *(override_flag(o, name) for o in overrides)]
  return _parse(argv, name, lambda values: config_flags.DEFINE_config_dict(
      name, ml_collections.ConfigDict(cfg.to_dict()), flag_values=values, lock_config=False,
      sys_argv=argv))


def _parse(argv: Sequence[str], name: str, define) -> ml_collections.ConfigDict:
  """The config flag `define(flag_values)` makes, parsed from `argv` by ml_collections."""
  values = flags.FlagValues()
  try:
    holder = define(values)
    values(argv)
    return holder.value
  except (flags.Error, AttributeError, KeyError, ValueError) as e:
    raise BassgenError(explain(e, argv, name)) from None


def explain(error: Exception, argv: Sequence[str], name: str = "config") -> str:
  """One line for a config that could not be loaded or overridden (no traceback)."""
  prefix = f"--{name}."
  if isinstance(error, (AttributeError, KeyError)):   # an override of a field that is not there
    field = (re.findall(r"\w+", str(error)) or ["?"])[0]
    hint = re.search(r'Did you mean "(\w+)"', str(error))
    bad = [a.split("=")[0] for a in argv[1:]
           if a.startswith(prefix) and field in a.split("=")[0].split(".")] or [f"{prefix}*"]
    dotted = bad[0].removeprefix(prefix)
    where = "the config" if name == "config" else f"the {name} section"
    return (f"{bad[0]}: {where} has no field {dotted!r}"
            f"{f' (did you mean {hint[1]!r}?)' if hint else ''}. Check the name against the "
            "config file.")
  lines = [l.strip() for l in str(error).splitlines() if l.strip()] or [repr(error)]
  if "Traceback" in str(error):   # "flag --config=...: Error whilst parsing ...:" + trace + "Err: why"
    lines = [f"{lines[0].split(': ')[0]}: {lines[-1].split(': ', 1)[-1]}"]
  return lines[0]
