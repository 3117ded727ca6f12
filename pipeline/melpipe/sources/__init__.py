"""Sources: the audio files a run reads, and what can be known of them.

Listing a tree or a bucket (:mod:`.discover`), decoding and resampling windows of a file
(:mod:`.audio`, :mod:`.pcm` for lossless samples' hashes), finding duplicates
(:mod:`.duplicates`), retrying transient storage errors (:mod:`.retries`), the ``scan``
survey (:mod:`.scan`) and the demo data (:mod:`.demo`).

May import: the foundation and ``analysis``; soundfile, soxr and fsspec. Never the store,
the run or Dask.
"""
