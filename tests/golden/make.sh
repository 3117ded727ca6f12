#!/usr/bin/env bash
# The commands that made the golden stores in made/, run from made/ with melpipe 0.6.0
# (commit 7a77609, store format 9) after `python make_audio.py audio` had made ../audio.
# tests/scenarios/test_golden.py runs these same commands with the code of the day, in a
# copy of this folder, and compares every object they write and every line they print.
# Made again on 2026-12-07 with 0.6.0's code on a CPU without AVX-512, under the settings
# that give every x86-64 CPU with AVX2 the same arithmetic (test_golden.SAME_ARITHMETIC):
#   NPY_DISABLE_CPU_FEATURES="X86_V3 X86_V4 AVX512_ICL AVX512_SPR" OPENBLAS_CORETYPE=Haswell
set -euo pipefail
melpipe=(${MELPIPE:-melpipe})
run() {  # run NAME ARGS...: one command, its standard output kept as NAME.out
    local name=$1
    shift
    "${melpipe[@]}" "$@" >>"$name.out"
}
run plain preprocess ../audio/first plain.zarr --scheduler sync --batch-size 2
run append preprocess ../audio/first append.zarr --scheduler sync --batch-size 2
run append preprocess ../audio append.zarr --append --scheduler sync
run all preprocess ../audio all.zarr --segments all --max-clips-per-file 3 --scheduler sync \
    --batch-size 3
run hifigan preprocess ../audio hifigan.zarr --preset hifigan --segments all --duplicates drop \
    --scheduler sync
run specgan preprocess ../audio specgan.zarr --preset specgan --stats extrema --workers 2
run plain info plain.zarr
