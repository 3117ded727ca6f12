"""The command line: the only place that talks to a person.

:mod:`.app` (the group, error lines, logging and signals), :mod:`.options` (click options
made from the declarations in :mod:`melpipe.analysis.config` and :mod:`melpipe.run.plan`),
:mod:`.reports` (what a run or a store says, printed) and one module per command group:
:mod:`.preprocessing` (``preprocess``, ``scan``), :mod:`.inspecting` (``info``, ``stats``,
``export``) and :mod:`.making` (``demo``).

May import: every layer: ``analysis``, ``sources``, ``store``, ``run`` and ``read``; click
and tqdm, which no other layer imports.
"""
