"""The run: deciding what to do, and doing it on an executor.

The plan is pure (:mod:`.plan`); :mod:`.types` holds what the planner shares with the
executors; the tasks each pass maps over its items (:mod:`.tasks`, :mod:`.results`); the
executors, in-process or Dask (:mod:`.executors`, :mod:`.dask`); and one run from start to
finish (:mod:`.runner`, :mod:`.lifecycle`, :mod:`.rereads`, :mod:`.analysed`).

May import: the foundation, ``analysis``, ``sources`` and ``store``; Dask and distributed,
which no other layer imports.
"""
