"""The primitive rules, by family. Each family module lists its :class:`PrimitiveRule` records
in ``RULES``; :mod:`rfjax.engine.registry` collects them into the one table.

Where a new primitive goes: an elementwise op in ``elementwise``; a windowed op (convolution,
pooling, padding) in ``windows``; a structural rearrangement (reshape, slice, concatenation) in
``movement``; indexing by values fixed by the program (gather, dynamic slice, scatter) in
``indexing``; a reduction, scan along an axis, sort or contraction in ``reductions``; a call
or loop in ``control``.
"""

from rfjax.engine.rules import control, elementwise, indexing, movement, reductions, windows

ALL_RULES = (elementwise.RULES + windows.RULES + movement.RULES + indexing.RULES
             + reductions.RULES + control.RULES)
