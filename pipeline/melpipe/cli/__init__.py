"""The command line: the only place that talks to a person.

:mod:`.app` (the group, logging and signals), :mod:`.options` (click options made from
the declarations on the library's fields, :mod:`melpipe.parameters`),
:mod:`.reports` (what a run or a store says, printed), :mod:`.errors` (the one line an
error becomes), :mod:`.progress` (the bars), and one module per command group:
:mod:`.preprocessing` (``preprocess``, ``scan``, ``demo``) and :mod:`.inspecting`
(``info``, ``export-png``, ``preview``, ``invert``).

May import: every layer: ``analysis``, ``sources``, ``store``, ``run`` and ``read``; click
and tqdm, which no other layer imports.
"""
