"""The run: deciding what to do, and doing it on an executor.

The plan is pure (:mod:`.plan`); :mod:`.types` holds what the planner shares with the
executors; the tasks each pass maps over its items and what they return (:mod:`.tasks`,
:mod:`.results`), a pass as a value (:mod:`.stages`); the executors, in this process or
on Dask (:mod:`.executors`, :mod:`.clusters`, and :mod:`.warm` for a cluster's workers);
and one run from start to finish (:mod:`.runner`, :mod:`.lifecycle`, with :mod:`.outputs`
for what a new store and an append do differently, :mod:`.analysed`, :mod:`.rereads`).

May import: the foundation, ``analysis``, ``sources`` and ``store``; Dask and distributed,
which no other layer imports.
"""
