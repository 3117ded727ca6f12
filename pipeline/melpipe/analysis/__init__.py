"""Analysis: what a clip's image is, as pure functions and frozen values on numpy arrays.

The parameters (:mod:`.config`, checked by :mod:`.parse`, and :mod:`.presets`), the
log-mel itself (:mod:`.features`) and its inverse (:mod:`.inverse`), which windows of a
file become clips (:mod:`.segments`), the mergeable dataset statistics (:mod:`.pixels`,
:mod:`.stats`) and the uint8 scaling (:mod:`.scaling`).

May import: the foundation (``melpipe.errors``, ``melpipe.records``), numpy, scipy and
librosa. No files, no storage, no Dask: every function here runs on an array in a unit test.
"""
