"""Reading: what training code and people use to look at a finished store.

:mod:`.reader` (``melpipe.open_store``: clips as images or log-mels, with their files),
:mod:`.torch` (Datasets, samplers and a loader for PyTorch; ``melpipe.torch``) and
:mod:`.pictures` (PNG files of clips).

May import: the foundation, ``analysis``, ``sources`` and ``store``. Never the run: a
training process needs neither Dask nor the planner.
"""
