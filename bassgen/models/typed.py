"""Typed model configs from ml_collections sections: each network takes a frozen dataclass
(`AutoencoderConfig`, `UNetConfig`), built once from the config's `model` section.

A field missing from the section (an export written before the field existed) takes the
dataclass's default; keys the network does not use (training-only ones) are ignored; lists
(from JSON) become tuples, so the configs are hashable and compare equal to the originals.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, TypeVar

from bassgen.errors import BassgenError

T = TypeVar("T")


def from_section(cls: type[T], section: Mapping[str, Any] | None, where: str = "model",
                 nested: Mapping[str, type] | None = None) -> T:
  """`cls(**fields)` read from `section` (a ConfigDict or dict). `nested`: field name -> the
  dataclass of a sub-section (built the same way; a missing sub-section keeps the default)."""
  nested = nested or {}
  section = {} if section is None else section
  values = {}
  for f in dataclasses.fields(cls):
    if f.name not in section:
      if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
        raise BassgenError(f"{where}.{f.name} is missing from the config; add it "
                           f"(--config.{where}.{f.name}=...)")
      continue
    value = section[f.name]
    if f.name in nested:
      value = from_section(nested[f.name], value, f"{where}.{f.name}")
    elif isinstance(value, list):
      value = tuple(value)
    values[f.name] = value
  return cls(**values)
