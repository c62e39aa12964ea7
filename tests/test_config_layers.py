"""Dependencies flow one way (DESIGN.md): config -> models, never back, and the store below them all,
function-level imports included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "gradflow"


def gradflow_imports(path: Path) -> set[str]:
    """Every gradflow module `path` imports, at module level or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gradflow"):
            out |= {f"{node.module}.{a.name}" for a in node.names}  # a name may be a module or an object in it
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("gradflow")}
    return out


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__")


@pytest.mark.parametrize("path", sorted((ROOT / "models").glob("*.py")), ids=lambda p: p.name)
def test_models_import_only_leaf_registries_and_each_other(path):
    allowed = ("gradflow.models", "gradflow.errors", "gradflow.activations")
    bad = {m for m in gradflow_imports(path) if not m.startswith(allowed)}
    assert not bad, f"{_module(path)} imports {sorted(bad)}: configuration reaches models as arguments"


@pytest.mark.parametrize("path", sorted((ROOT / "config").glob("*.py")), ids=lambda p: p.name)
def test_config_imports_nothing_of_gradflow_but_itself_and_leaf_registries(path):
    # leaves that import no gradflow module above them: no cycle (theory for q*, textdata for the text's size,
    # overrides for the override strings)
    allowed = ("gradflow.config.", "gradflow.errors.", "gradflow.activations", "gradflow.theory", "gradflow.textdata",
               "gradflow.choices.", "gradflow.overrides.")
    bad = {m for m in gradflow_imports(path) if not m.startswith(allowed)}
    assert not bad, f"{_module(path)} imports {sorted(bad)}"


def test_the_config_parts_import_one_way():
    # schema <- validation <- composition, messages beside composition (which imports it: messages reaches
    # composition only inside a function, for the one compose an error message needs); device below them all
    order = ["device", "schema", "validation", "messages", "composition"]
    for k, name in enumerate(order):
        above = {f"gradflow.config.{m}" for m in order[k + 1:]} - ({"gradflow.config.composition"}
                                                                    if name == "messages" else set())
        imported = {m.rsplit(".", 1)[0] if m.count(".") > 2 else m for m in gradflow_imports(ROOT / "config" / f"{name}.py")}
        assert not imported & above, f"gradflow.config.{name} imports {sorted(imported & above)}"


def test_the_store_imports_only_leaves():
    # the results contract sits below config, models and probes: they write through it, it knows none of them
    allowed = ("gradflow.errors.", "gradflow.files.", "gradflow.choices.",  # (choices: data, no Hydra)
               "gradflow.fmt.",  # (fmt: numbers as text and strict JSON; it imports no gradflow module)
               "gradflow.overrides.")  # (override text: a run folder's name read back; it imports errors alone)
    bad = {m for m in gradflow_imports(ROOT / "store.py") if not m.startswith(allowed) and m != "gradflow"}
    assert not bad, f"gradflow.store imports {sorted(bad)}"


def test_the_checker_sees_function_level_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from gradflow.config import compose\n    import gradflow.job\n")
    assert {"gradflow.config.compose", "gradflow.job"} <= gradflow_imports(source)
