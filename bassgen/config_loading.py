"""Loads `configs/NAME.py[:variant]` files outside absl (for the `bassgen` console script)."""
from __future__ import annotations

import ast
import importlib.util
import pathlib

import ml_collections

from bassgen.errors import BassgenError


def load_config(spec: str, overrides: list[str] | tuple[str, ...] = ()) -> ml_collections.ConfigDict:
  """`spec` is `path/to/config.py` or `path/to/config.py:variant`; overrides are `a.b=value`."""
  path, _, arg = spec.partition(":")
  file = pathlib.Path(path)
  if not file.is_file():
    raise BassgenError(f"{file}: no such config file. Use e.g. configs/autoencoder.py:demo.")
  module_spec = importlib.util.spec_from_file_location(f"bassgen_config_{file.stem}", file)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  try:
    cfg = module.get_config(arg or None)
  except ValueError as e:
    raise BassgenError(f"{file}: {e}") from None
  for item in overrides:
    key, eq, value = item.partition("=")
    if not eq:
      raise BassgenError(f"bad override {item!r}: write it as field.name=value")
    set_field(cfg, key.removeprefix("config."), value)
  return cfg


def set_field(cfg: ml_collections.ConfigDict, dotted: str, text: str) -> None:
  *parents, leaf = dotted.split(".")
  node = cfg
  for depth, key in enumerate(parents + [leaf]):
    if not isinstance(node, ml_collections.ConfigDict) or key not in node:
      where = ".".join(parents[:depth]) or "the config"
      known = (f" (it has {', '.join(sorted(node.keys()))})"
               if isinstance(node, ml_collections.ConfigDict) else " (it is not a group)")
      raise BassgenError(f"unknown config field {dotted!r}: {where} has no {key!r}{known}")
    if depth < len(parents):
      node = node[key]
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    value = text
  node[leaf] = value
