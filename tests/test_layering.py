"""The layering of docs/ARCHITECTURE.md, read from the source with `ast` (imports anywhere in a
module, function-local ones included): the networks and the diffusion maths import nothing from
the layers built on them, and evaluation takes no generator or network of its own."""
import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).parents[1] / "bassgen"
# Per package: the bassgen modules (and their submodules) it must not import.
FORBIDDEN = {
    "models": ("data", "diffusion", "trainers", "codec", "samplers", "generation", "commands",
               "evaluation", "cli", "runner", "main"),
    "diffusion": ("data", "trainers", "codec", "samplers", "generation", "commands", "evaluation",
                  "cli", "runner", "main"),
    "evaluation": ("models", "diffusion", "trainers", "codec", "samplers", "generation",
                   "commands", "cli", "runner", "main"),
}


def bassgen_imports(path: pathlib.Path) -> set[str]:
  """Every `bassgen.x.y` module a file imports (absolute imports; the project uses no others)."""
  out = set()
  for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
    if isinstance(node, ast.Import):
      out |= {a.name for a in node.names if a.name.startswith("bassgen")}
    elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bassgen"):
      out |= {f"{node.module}.{a.name}" for a in node.names}
  return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_lower_layers_do_not_import_higher_ones(package):
  bad = []
  for path in sorted((PACKAGE / package).glob("*.py")):
    for name in bassgen_imports(path):
      parts = name.split(".")
      if len(parts) > 1 and parts[1] in FORBIDDEN[package]:
        bad.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
  assert not bad, "\n".join(bad)
