"""Recurrent ATen operators in JAX (``aten.lstm``, ``aten.gru``, ``aten.rnn_tanh``,
``aten.rnn_relu``, the ``.input`` overloads ``nn.LSTM``/``nn.GRU``/``nn.RNN`` export to), with
PyTorch's argument order, gate order and weight layout, as a ``lax.scan`` over the sequence
(one per layer and direction), so the engine's scan rule gives their exact field: a
unidirectional output at step ``t`` sees steps ``0..t``, a bidirectional one every step.

Arguments: ``(input, hx, params, has_biases, num_layers, dropout, train, bidirectional,
batch_first)``; ``input`` is ``(T, N, F)`` (``(N, T, F)`` with ``batch_first``); ``hx`` the
initial states ``(layers * directions, N, H)`` (LSTM: ``[h0, c0]``); ``params`` per layer and
direction ``w_ih, w_hh[, b_ih, b_hh][, w_hr]`` (``w_hr``: an LSTM's ``proj_size``). Dropout
between layers is the identity (evaluation mode).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["recurrent"]


def _lstm_cell(x, state, w):
    h, c = state
    gates = x @ w[0].T + h @ w[1].T + (w[2] + w[3] if len(w) >= 4 else 0)
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    if len(w) in (3, 5):  # proj_size: h is projected by w_hr
        h = h @ w[-1].T
    return (h, c), h


def _gru_cell(x, state, w):
    (h,) = state
    gi = x @ w[0].T + (w[2] if len(w) == 4 else 0)
    gh = h @ w[1].T + (w[3] if len(w) == 4 else 0)
    ir, iz, in_ = jnp.split(gi, 3, axis=-1)
    hr, hz, hn = jnp.split(gh, 3, axis=-1)
    r, z = jax.nn.sigmoid(ir + hr), jax.nn.sigmoid(iz + hz)
    n = jnp.tanh(in_ + r * hn)
    h = (1 - z) * n + z * h
    return (h,), h


def _rnn_cell(act):
    def cell(x, state, w):
        (h,) = state
        h = act(x @ w[0].T + h @ w[1].T + (w[2] + w[3] if len(w) == 4 else 0))
        return (h,), h
    return cell


_CELLS = {"lstm": _lstm_cell, "gru": _gru_cell, "rnn_tanh": _rnn_cell(jnp.tanh),
          "rnn_relu": _rnn_cell(jax.nn.relu)}


def recurrent(kind: str):
    """The JAX function of ``aten.<kind>.input``: ``(output, h_n[, c_n])``."""
    cell = _CELLS[kind]
    n_states = 2 if kind == "lstm" else 1

    def fn(x, hx, params, has_biases, num_layers, dropout, train, bidirectional,
           batch_first):
        hx = list(hx) if kind == "lstm" else [hx]
        dirs = 2 if bidirectional else 1
        per = len(params) // (num_layers * dirs)
        seq = jnp.swapaxes(x, 0, 1) if batch_first else x  # (T, N, F)
        finals = [[] for _ in range(n_states)]
        for layer in range(num_layers):
            outs = []
            for d in range(dirs):
                k = layer * dirs + d
                w = tuple(params[k * per:(k + 1) * per])
                state = tuple(s[k] for s in hx)
                (state, ys) = lax.scan(lambda s, xt, w=w: cell(xt, s, w), state, seq,
                                       reverse=d == 1)
                outs.append(ys)
                for i in range(n_states):
                    finals[i].append(state[i])
            seq = jnp.concatenate(outs, axis=-1) if dirs == 2 else outs[0]
        out = jnp.swapaxes(seq, 0, 1) if batch_first else seq
        return (out,) + tuple(jnp.stack(f) for f in finals)
    return fn
