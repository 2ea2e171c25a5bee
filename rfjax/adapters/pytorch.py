"""PyTorch modules as JAX functions: ``torch.export`` traces the module in evaluation mode, and
its ATen graph is lowered to JAX with :data:`rfjax.adapters.pytorch_table.ATEN`.

:func:`from_torch` gives ``(fn, x)``: ``fn(params, x)``-style JAX callable (a
``functools.partial`` over the module's current weights, which stay arrays: jit arguments for
the ERF, abstract parameters for the TRF) and the example as a NumPy array, both in PyTorch's
layout (``NCHW``). Every ATen call runs inside ``jax.named_scope(<module path>)``, so the
rows of :meth:`rfjax.TRF.table` carry the module names (``ResNet/layer1.0.conv1``).

The exported program is cached per module (weakly: it never keeps a module alive) and input
shape (one export per batch size the function is called with); the weights are read again at
every call, so a module trained in between is seen as it is now. Floating-point parameters
and buffers (batch-norm statistics) are parameters; integer buffers (Swin's relative position
index) and constant tensors are architecture.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import weakref
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rfjax.adapters.pytorch_ops import UnsupportedOperatorError
from rfjax.adapters.pytorch_table import lookup

__all__ = ["Program", "TorchFunction", "UnsupportedOperatorError", "from_torch",
           "is_torch_module", "program", "torch_function"]

#: View operators whose mutation writes through to their base (in-place on a slice).
_VIEWS = {"slice", "select", "alias", "view", "reshape", "_unsafe_view", "unsqueeze",
          "squeeze", "flatten", "permute", "transpose", "t", "contiguous", "narrow",
          "movedim", "moveaxis", "swapaxes", "swapdims", "unflatten", "view_as",
          "reshape_as"}
#: Operators whose pieces (``getitem`` of the output) are views of their input.
_PIECES = {"split", "split_with_sizes", "chunk", "unbind", "tensor_split", "unsafe_split",
           "unsafe_chunk", "unsafe_split_with_sizes"}


def is_torch_module(obj: Any) -> bool:
    """Whether ``obj`` is a ``torch.nn.Module`` (without importing torch when it is not)."""
    import sys

    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - only reached with a torch object
        raise ImportError("PyTorch models need torch: pip install 'rfjax[torch]'") from e
    return torch


def example_tensor(x: Any):
    """A float32 torch tensor of the example's shape (a tensor, an array or a shape)."""
    torch = _torch()
    if isinstance(x, torch.Tensor):
        return torch.zeros(tuple(x.shape), dtype=x.dtype if x.is_floating_point()
                           else torch.float32)
    if isinstance(x, (tuple, list)) and all(isinstance(d, (int, np.integer)) for d in x):
        return torch.zeros(tuple(int(d) for d in x))
    if hasattr(x, "shape"):
        return torch.zeros(tuple(x.shape))
    raise TypeError(f"the example for a torch module must be a tensor, an array or a shape "
                    f"tuple; got {type(x).__name__}")


def to_numpy(x: Any):
    """A torch tensor as a NumPy array (other arrays pass through)."""
    torch = _torch() if type(x).__module__.startswith("torch") else None
    if torch is not None and isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return x


@dataclasses.dataclass(eq=False)
class Program:
    """One exported module at one input shape, ready to run in JAX.

    ``apply(params, x)``: the module's output (its pytree: a tensor, a tuple, a dict) for an
    input ``x`` in the module's layout; ``params`` maps the names in :attr:`param_names` to
    arrays. ``layer``: stop at that submodule's output (a dotted module path).
    """

    nodes: list
    inputs: dict  # placeholder name -> ("param", name) | ("const", array) | ("input", None)
    out_spec: Any
    param_names: tuple[str, ...]
    layer: str | None = None
    layer_node: Any = None
    attrs: dict = dataclasses.field(default_factory=dict)  # get_attr target -> its value

    def params(self, module) -> dict[str, jax.Array]:
        """The module's current floating-point parameters and buffers."""
        named = dict(module.named_parameters(remove_duplicate=False))
        named.update(dict(module.named_buffers(remove_duplicate=False)))
        return {n: jnp.asarray(named[n].detach().cpu().numpy()) for n in self.param_names}

    def apply(self, params: dict, x):
        def placeholder(node):
            kind, v = self.inputs[node.name]
            return x if kind == "input" else (params[v] if kind == "param" else v)

        out = self._run(self.nodes, placeholder, self.attrs.__getitem__, self.layer_node)
        return out if self.layer_node is not None else _unflatten(list(out), self.out_spec)

    def _run(self, nodes, placeholder, attr, stop=None):
        """Evaluate the graph ``nodes``: placeholders from ``placeholder(node)``, ``get_attr``
        from ``attr(target)``; the value of ``stop`` (``layer=``) once it is computed, else
        the output node's values."""
        env: dict = {}
        views: dict = {}  # view node -> (base node, op name, args)
        for node in nodes:
            if node.op == "placeholder":
                env[node] = placeholder(node)
            elif node.op == "get_attr":
                env[node] = attr(node.target)
            elif node.op == "call_function":
                self._call(node, env, views)
                if node is stop:
                    return env[node]
            elif node.op == "output":
                return _value(node.args[0], env)
        raise RuntimeError("the exported program has no output")  # pragma: no cover

    def _call(self, node, env, views):
        if node.target is operator.getitem:
            src, i = node.args[0], node.args[1]
            seq = _value(src, env)
            env[node] = seq[i]
            if _is_node(src) and src.op == "call_function" and src.target is not \
                    operator.getitem and _op_name(src.target)[0] in _PIECES and \
                    _is_node(src.args[0]):
                # piece i of a split is a view of the input: a slice (unbind: a select)
                unbind = _op_name(src.target)[0] == "unbind"
                k = 1 if unbind else 2
                dim = src.args[k] if len(src.args) > k else src.kwargs.get("dim", 0)
                if unbind:
                    views[node] = (src.args[0], "select", (dim, i))
                else:
                    d = dim + seq[i].ndim if dim < 0 else dim
                    start = sum(int(p.shape[d]) for p in seq[:i])
                    views[node] = (src.args[0], "slice", (d, start, start + seq[i].shape[d], 1))
            return
        name, overload = _op_name(node.target)
        if name.startswith("_assert") or name in ("sym_constrain_range_for_size",):
            env[node] = None
            return
        if name in _WRAPS:  # a region of the graph in its own submodule: run it inline
            k = _WRAPS[name]
            env[node] = self._run_sub(_value(node.args[k], env),
                                      _value(tuple(node.args[k + 1:]), env))
            return
        fn = lookup(name, overload)
        if fn is None:
            raise _unsupported(node, name, overload)
        args, kwargs = _value(node.args, env), _value(node.kwargs, env)
        with jax.named_scope(_scope_name(node)):
            try:
                out = fn(*args, **kwargs)
            except UnsupportedOperatorError as e:
                raise UnsupportedOperatorError(f"{e} (in module {_scope(node)})") from None
        env[node] = out
        if name in _VIEWS and node.args and _is_node(node.args[0]):
            views[node] = (node.args[0], name, node.args[1:])
        if _mutates(node.target) and node.args and _is_node(node.args[0]):
            _write_back(node.args[0], out, env, views)

    def _run_sub(self, sub, operands) -> tuple:
        """The outputs of the graph module ``sub`` (a wrapped region) on ``operands``."""
        args = iter(operands)
        return tuple(self._run(sub.graph.nodes, lambda _node: next(args),
                               lambda target: _attr(sub, target)))


#: Higher-order operators that only wrap a region of the graph in a submodule (a ``with
#: torch.autocast(...)`` or ``torch.no_grad()`` block inside ``forward``, e.g. EfficientViT's
#: attention): the number of arguments before the submodule; the rest are its operands. The
#: region runs inline, in its operands' dtype: an autocast's lower precision is not applied.
_WRAPS = {"wrap_with_autocast": 4, "wrap_with_set_grad_enabled": 1}


def _value(a, env):
    """``a`` (an fx node, or a container of them) evaluated in ``env``."""
    if _is_node(a):
        return env[a]
    if isinstance(a, (list, tuple)):
        return type(a)(_value(v, env) for v in a)
    if isinstance(a, dict):
        return {k: _value(v, env) for k, v in a.items()}
    return a


def _attr(module, target: str):
    """A ``get_attr`` target: a submodule of a wrapped region, or a constant (an array)."""
    obj = module
    for part in target.split("."):
        obj = getattr(obj, part)
    if type(obj).__module__.startswith("torch") and hasattr(obj, "detach"):
        return np.asarray(obj.detach().cpu().numpy())
    return obj


def _unsupported(node, name: str, overload: str) -> UnsupportedOperatorError:
    return UnsupportedOperatorError(
        f"rfjax has no JAX lowering for the PyTorch operator aten.{name}.{overload} "
        f"(in module {_scope(node) or '<top>'}). Open an issue with the operator, or express "
        "it with supported operators")


def _is_node(a) -> bool:
    return hasattr(a, "op") and hasattr(a, "meta")


def _op_name(target) -> tuple[str, str]:
    """``("conv2d", "default")`` of ``aten.conv2d.default``."""
    schema = getattr(target, "_schema", None)
    overload = getattr(target, "_overloadname", "default") or "default"
    if schema is not None:
        return schema.name.split("::")[-1], overload
    return str(target).split(".")[-2 if str(target).count(".") >= 2 else -1], overload


def _mutates(target) -> bool:
    schema = getattr(target, "_schema", None)
    return bool(schema is not None and schema.arguments and schema.arguments[0].alias_info
                and schema.arguments[0].alias_info.is_write)


def _write_back(target_node, new, env, views) -> None:
    """An in-place operator wrote ``new`` into ``target_node``: rebind it, and its base
    through the chain of views it was taken from."""
    env[target_node] = new
    while target_node in views:
        base, op, args = views[target_node]
        old = env[base]
        if op in ("slice",):
            dim, start, end, step = (list(args) + [0, None, None, 1][len(args):])[:4]
            d = dim + old.ndim if dim < 0 else dim
            n = old.shape[d]
            start = 0 if start is None else (start + n if start < 0 else min(start, n))
            end = n if end is None else (end + n if end < 0 else min(end, n))
            new = old.at[(slice(None),) * d + (slice(start, end, step),)].set(new)
        elif op == "select":
            dim, i = args
            new = old.at[(slice(None),) * (dim + old.ndim if dim < 0 else dim) + (i,)].set(new)
        elif op == "narrow":
            dim, start, length = args
            d = dim + old.ndim if dim < 0 else dim
            start = start + old.shape[d] if start < 0 else start
            new = old.at[(slice(None),) * d + (slice(start, start + length),)].set(new)
        elif op in ("permute",):
            new = jnp.transpose(new, np.argsort(args[0]))
        elif op in ("transpose", "swapaxes", "swapdims"):
            new = jnp.swapaxes(new, args[0], args[1])
        elif op in ("movedim", "moveaxis"):
            new = jnp.moveaxis(new, args[1], args[0])
        elif op == "t":
            new = new.T
        else:  # alias, view, reshape, (un)squeeze, flatten, contiguous: same elements
            new = new.reshape(old.shape)
        env[base] = new
        target_node = base


def _scope(node) -> str:
    """The dotted path of the submodule that ran ``node`` (``""``: the top module)."""
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return ""
    return list(stack.values())[-1][0]


def _scope_name(node) -> str:
    """``"ResNet/layer1.0.conv1"``: the top module's class, then the submodule path (the
    name of the table rows)."""
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return "model"
    top = str(list(stack.values())[0][1]).rsplit(".", 1)[-1]
    path = _scope(node)
    return f"{top}/{path}" if path else top


def _unflatten(leaves, spec):
    if spec is None:
        return leaves[0] if len(leaves) == 1 else tuple(leaves)
    from torch.utils import _pytree

    return _pytree.tree_unflatten(leaves, spec)


@dataclasses.dataclass(eq=False)
class TorchFunction:
    """A module as a JAX function of any input shape: ``apply(params, x)`` runs the
    :class:`Program` exported at ``x``'s shape (exported on first use: the ERF calls it with
    one image and with whole chunks). Holds the module weakly."""

    module_ref: Any
    layer: str | None
    programs: dict = dataclasses.field(default_factory=dict)

    def program(self, shape: tuple[int, ...], dtype: str = "float32") -> Program:
        key = (tuple(int(d) for d in shape), str(dtype))
        if key not in self.programs:
            module = self.module_ref()
            if module is None:  # pragma: no cover - the cache dies with the module
                raise RuntimeError("the torch module of this function was garbage-collected")
            torch = _torch()
            x = torch.zeros(key[0], dtype=getattr(torch, key[1], torch.float32))
            self.programs[key] = _build(module, x, self.layer)
        return self.programs[key]

    def apply(self, params: dict, x):
        return self.program(tuple(x.shape), str(x.dtype)).apply(params, x)


_FUNCTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def torch_function(module, layer: str | None = None) -> TorchFunction:
    """The :class:`TorchFunction` of ``module`` (cached per module and layer)."""
    per = _FUNCTIONS.setdefault(module, {})
    if layer not in per:
        per[layer] = TorchFunction(weakref.ref(module), layer)
    return per[layer]


def program(module, example, layer: str | None = None) -> Program:
    """The :class:`Program` of ``module`` at ``example``'s shape (cached per module)."""
    x = example_tensor(example)
    return torch_function(module, layer).program(tuple(x.shape), str(x.dtype).split(".")[-1])


def _build(module, x, layer: str | None) -> Program:
    torch = _torch()
    was_training = module.training
    module.eval()  # evaluation mode for the analysis; the user's mode is restored
    returned: list = []  # what the layer's forward returns (seen by a hook while exporting)
    hook = None
    if layer is not None:
        try:
            hook = module.get_submodule(layer).register_forward_hook(
                lambda _m, _i, out: returned.append(out))
        except AttributeError:
            pass  # not a submodule path: _lower says so
    try:
        with torch.no_grad():
            try:
                ep = torch.export.export(module, (x,))
            except Exception as e:
                raise RuntimeError(
                    f"torch.export could not trace {type(module).__name__} at input shape "
                    f"{tuple(x.shape)}: {type(e).__name__}: {str(e)[:400]}. rfjax needs a "
                    "module that torch.export can trace (no data-dependent Python control "
                    "flow)") from e
    finally:
        module.train(was_training)
        if hook is not None:
            hook.remove()
    prog = _lower(ep, layer)
    try:
        _check(prog)
    except _NeedsFunctional:
        prog = _lower(ep.run_decompositions({}), layer)
        _check(prog)
    if returned:
        _check_layer_output(prog, layer, returned[-1])
    return prog


def _check_layer_output(prog: Program, layer: str, out) -> None:
    """``layer=`` stops at the last value computed inside the submodule: refuse, rather than
    analyse another tensor, where that is not what its ``forward`` returns (a tuple, a dict,
    or a last computation of another shape)."""
    torch = _torch()
    if not isinstance(out, torch.Tensor):
        raise ValueError(
            f"layer {layer!r} returns a {type(out).__name__}, not one tensor; rfjax analyses "
            "one tensor: name a submodule that returns one (or analyse the model's output)")
    val = prog.layer_node.meta.get("val")
    if val is not None and tuple(val.shape) != tuple(out.shape):
        raise ValueError(
            f"layer {layer!r} returns a tensor of shape {tuple(out.shape)}, but the last value "
            f"computed inside it has shape {tuple(val.shape)}; rfjax cannot tell which value "
            "is its output: name a submodule whose output is its last computation")


class _NeedsFunctional(Exception):
    pass


def _check(prog: Program) -> None:
    """Fail early on an operator without a lowering; ask for functionalisation where a view
    that cannot be written back through is mutated."""
    _check_nodes(prog.nodes, prog.attrs)


def _check_nodes(nodes, attrs) -> None:
    for node in nodes:
        if node.op != "call_function" or node.target is operator.getitem:
            continue
        name, overload = _op_name(node.target)
        if name.startswith("_assert"):
            continue
        if name in _WRAPS:
            sub = node.args[_WRAPS[name]]
            sub = attrs[sub.target] if _is_node(sub) and sub.target in attrs else sub
            _check_nodes(list(sub.graph.nodes), {})
            continue
        if lookup(name, overload) is None:
            raise _unsupported(node, name, overload)
        if _mutates(node.target) and node.args and _is_node(node.args[0]):
            src = node.args[0]
            if src.op == "call_function" and src.target is not operator.getitem:
                sname = _op_name(src.target)[0]
                if sname in ("expand", "as_strided", "diagonal", "unfold"):
                    raise _NeedsFunctional


def _lower(ep, layer: str | None) -> Program:
    torch = _torch()
    from torch.export.graph_signature import InputKind

    state = ep.state_dict
    consts = ep.constants
    inputs: dict = {}
    params = []
    for spec in ep.graph_signature.input_specs:
        name = spec.arg.name
        if spec.kind == InputKind.USER_INPUT:
            inputs[name] = ("input", None)
            continue
        t = state.get(spec.target) if spec.target in state else consts.get(spec.target)
        if t is None:
            raise RuntimeError(f"exported input {spec.target} has no value")  # pragma: no cover
        if isinstance(t, torch.Tensor) and t.is_floating_point() and spec.kind in (
                InputKind.PARAMETER, InputKind.BUFFER) and spec.target in state:
            inputs[name] = ("param", spec.target)
            params.append(spec.target)
        else:
            arr = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
            if arr.dtype == np.int64:
                arr = arr.astype(np.int32)
            inputs[name] = ("const", arr)
    nodes = list(ep.graph.nodes)
    layer_node = None
    if layer is not None:
        inside = [n for n in nodes if n.op == "call_function"
                  and (_scope(n) == layer or _scope(n).startswith(layer + "."))]
        if not inside:
            paths = sorted({_scope(n).split(".")[0] for n in nodes if _scope(n)})
            raise ValueError(f"layer {layer!r} is not a submodule that computes anything; "
                             f"top-level modules: {paths}")
        layer_node = inside[-1]
    out_spec = None
    try:
        out_spec = ep.call_spec.out_spec
    except AttributeError:  # pragma: no cover - older torch
        pass
    attrs = {n.target: _attr(ep.graph_module, n.target) for n in nodes if n.op == "get_attr"}
    return Program(nodes, inputs, out_spec, tuple(params), layer, layer_node, attrs)


def from_torch(module, example, *, layer: str | None = None) -> tuple[Callable, np.ndarray]:
    """A PyTorch module as a JAX function: ``(fn, x)``.

    Args:
      module: a ``torch.nn.Module`` taking one input tensor (``N, C, *spatial``).
      example: an example input (a tensor, an array or a shape tuple); its shape fixes the
        exported program.
      layer: a submodule path (``"layer3"``, ``"features.denseblock2"``): ``fn`` returns that
        submodule's output instead of the module's.

    Returns:
      ``fn``: a ``functools.partial`` of the exported program over the module's current
      weights (JAX arrays), ``fn(x) -> output`` in PyTorch's layout, evaluation mode; ``x``:
      the example as a float32 NumPy array.
    """
    prog = program(module, example, layer)
    fun = torch_function(module, layer)
    if hasattr(example, "shape") and not isinstance(example, tuple):
        x_np = np.asarray(to_numpy(example), dtype=np.float32)
    else:
        x_np = np.zeros(tuple(example_tensor(example).shape), np.float32)
    return functools.partial(fun.apply, prog.params(module)), x_np
