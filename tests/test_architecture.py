"""The code's structure: one table of primitive rules shared by the TRF and the cone, no
import cycles, small modules, public jax APIs only, and a cache that can be cleared."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend import core as jcore

import rfjax
from rfjax import callables, cone
from rfjax.engine import registry
from rfjax.engine.records import INLINE, ConeRule, PrimitiveRule
from rfjax.engine.rules.elementwise import ELEMENTWISE_CONE, elementwise_rule

ROOT = Path(__file__).resolve().parents[1] / "rfjax"


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(ROOT.rglob("*.py")):
        rel = p.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every rfjax module ``name`` imports, at top level or inside functions (imports for
    type checkers only, under ``if TYPE_CHECKING:``, do not run and are skipped)."""
    tree = ast.parse(path.read_text())
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING"
                   for stmt in node.body for n in ast.walk(stmt)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                                + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.add(sub if sub in modules else base)
    return {m for m in found if m in modules and m != name}


def test_no_import_cycle():
    modules = _modules()
    graph = {m: _imports(m, p, modules) for m, p in modules.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if n.startswith(m + "."):  # a package importing its own submodules
                continue
            if state.get(n) == 1:
                cycle = stack[stack.index(n):] + [n]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert "rfjax.effective" not in graph["rfjax.cone"]  # the ERF uses the cone, not back


def test_the_cycle_check_can_fail(tmp_path):
    # The checker itself: a two-module cycle is reported.
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("import rfjax.b\n")
    b.write_text("from rfjax import a\n")
    mods = {"rfjax.a": a, "rfjax.b": b}
    assert _imports("rfjax.a", a, mods) == {"rfjax.b"}
    assert _imports("rfjax.b", b, mods) == {"rfjax.a"}


def test_modules_are_small_and_use_public_jax():
    for name, path in _modules().items():
        text = path.read_text()
        n = len(text.splitlines())
        assert n <= 800, f"{name} has {n} lines (split it: one idea per module)"
        assert "jax._src" not in text, f"{name} imports a private jax module"


def test_trf_and_cone_share_one_table():
    trf_prims, cone_prims = registry.trf_primitives(), registry.cone_primitives()
    assert cone_prims <= trf_prims  # every primitive the cone handles, the TRF handles
    # the families that must be in both
    for p in ("add", "sharding_constraint", "pvary", "conv_general_dilated", "reshape",
              "reduce_window_max", "pad", "slice", "dot_general", "select_n", "pjit"):
        assert p in trf_prims and p in cone_prims, p
    # global operations: TRF only
    for p in ("sort", "cumsum", "gather", "scan", "while"):
        assert p in trf_prims and p not in cone_prims, p
    assert registry.lookup("pjit").cone is INLINE
    assert registry.lookup("conv_general_dilated").row
    assert not registry.lookup("add").row


def _double_primitive():
    p = jcore.Primitive("rfjax_test_double")
    p.def_impl(lambda x: 2 * x)
    p.def_abstract_eval(lambda x: jax.core.ShapedArray(x.shape, x.dtype))
    return p


def test_a_registered_primitive_reaches_trf_and_cone():
    double = _double_primitive()

    def fn(x):
        y = jax.lax.conv_general_dilated(x, jnp.ones((3, 3, 1, 1)), (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return double.bind(y)

    x = jax.ShapeDtypeStruct((1, 9, 9, 1), jnp.float32)
    with pytest.raises(rfjax.UnsupportedPrimitiveError, match="rfjax_test_double"):
        rfjax.trf(fn, x)
    closed = jax.make_jaxpr(fn)(x)
    with pytest.raises(cone.Unsupported, match="rfjax_test_double"):
        cone.cone_plan(closed, (4, 4))
    rule = PrimitiveRule("rfjax_test_double", elementwise_rule, ELEMENTWISE_CONE)
    with registry.registered(rule):
        t = rfjax.trf(fn, x)
        assert t.size == (3, 3) and t.region((4, 4)) == ((3, 5), (3, 5))
        plan = cone.cone_plan(closed, (4, 4))
        assert plan.window == ((3, 6), (3, 6))
    assert registry.lookup("rfjax_test_double") is None  # removed again
    with pytest.raises(rfjax.UnsupportedPrimitiveError):
        rfjax.trf(fn, x)


def test_register_refuses_a_second_rule_and_non_records():
    with pytest.raises(ValueError, match="already has a rule"):
        registry.register(PrimitiveRule("add", elementwise_rule))
    with pytest.raises(TypeError, match="PrimitiveRule"):
        registry.register("add")  # type: ignore[arg-type]
    assert isinstance(registry.lookup("conv_general_dilated").cone, ConeRule)


def test_clear_cache_drops_compiled_work():
    def f(x):
        return x * 2.0

    x = np.ones((2, 6, 6, 1), np.float32)
    rfjax.erf(f, x, crop="none")
    assert callables.cache_size() >= 1
    rfjax.clear_cache()
    assert callables.cache_size() == 0
    r = rfjax.erf(functools.partial(lambda a, x: a * x, 3.0), x, crop="none")
    assert float(r.map[3, 3]) == pytest.approx(3.0)
