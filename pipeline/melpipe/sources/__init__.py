"""Sources: the audio files a run reads, and what can be known of them.

Listing a tree or a bucket (:mod:`.discover`), what a header says (:mod:`.headers`),
decoding and resampling windows of a file (:mod:`.audio`), a file's identity without
decoding it (:mod:`.pcm`: its bytes' and its samples' hashes), finding duplicates
(:mod:`.duplicates`), retrying transient storage errors (:mod:`.retries`), the ``scan``
survey (:mod:`.scan`) and the demo data (:mod:`.demo`).

May import: the foundation and ``analysis``; soundfile, soxr and fsspec. Never the store,
the run or Dask.
"""
