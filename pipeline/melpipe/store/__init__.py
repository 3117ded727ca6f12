"""The store: the one Zarr layout melpipe writes and reads, and who owns it.

What a store holds, in every format version it reads (:mod:`.schema`, pure), the lock that
lets one run own an output (:mod:`.lock`), writing (:mod:`.writer`) and opening a finished
store for reading (:mod:`.opened`).

May import: the foundation, ``analysis`` (the config and statistics a store records) and
``sources`` (locations and file systems); zarr, numcodecs and fsspec. Zarr's API is used
nowhere else. Never the planner, the executors or Dask.
"""
