"""Every command and code block of the README and of docs/ runs as written.

They run in a folder laid out as a fresh clone is after `make preprocess` (data/demo,
data/demo.zarr, and .venv, here a link to the environment running the tests):

- ``console`` blocks run line by line in bash, stopping at the first failure. A ``make``
  line runs that target of the repository's Makefile, with the environment of these tests
  and its outputs (the demo data, the benchmarks' data and results) moved into the
  folder; the benchmarks run at a size that takes seconds, not minutes. ``make test`` is
  not run here: it is this very run (``.ci/run`` runs it); a target that two pages show
  runs once.
- ``python`` blocks run in a fresh namespace; ``pycon`` blocks run as doctests. A
  ``python`` block that begins ``# Not run as written`` loads a public checkpoint: it
  runs with its ``# checkpoint`` lines replaced by a small randomly initialised
  generator of the vocoder's interface, its ``# package`` lines left out, and the
  audio's shape checked against its comment.

The schema's arrays must also be the ones docs/store-format.md lists.
"""

from __future__ import annotations

import doctest
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from melpipe.store.schema import ARRAYS, RUN_STATE
from tests.helpers import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.DOTALL | re.MULTILINE)
VENV = Path(sys.prefix)
# Sizes that make each benchmark take seconds: what `make bench` measures, smaller.
BENCH_ARGS = {
    "BENCH_PREPROCESS_ARGS": "--files 96 --recordings 48",
    "BENCH_LONG_ARGS": "--minutes 0.5",
    "BENCH_PRESETS_ARGS": "--seconds 0.01 --batch 4",
    "BENCH_HASHES_ARGS": "--files 4 --minutes 0.05",
    "BENCH_LISTING_ARGS": "--paths 2000",
    "BENCH_READ_ARGS": "--count 96 --passes 1 --epochs 1",
    "BENCH_SCALE_ARGS": "--sizes 50",
    "BENCH_STATS_ARGS": "--count 2",
}


NOT_RUN = "# Not run as written"
# One process runs this module (`make test` spreads tests over processes): a `make` target
# that two pages show runs once, in one clone, only if every block sees the same clone.
pytestmark = pytest.mark.xdist_group("docs")


def blocks(kind: str, *, checkpoints: bool = False) -> list[tuple[str, str]]:
    """The blocks of one kind on every page; for ``python``, those that load a public
    checkpoint only with ``checkpoints``, and only those."""
    found = []
    for page in PAGES:
        for n, (lang, code) in enumerate(BLOCK.findall(page.read_text())):
            if lang == kind and (kind != "python" or code.startswith(NOT_RUN) == checkpoints):
                found.append((f"{page.relative_to(REPO)}#{n}", code))
    return found


def make(target: str, folder: Path) -> list[str]:
    """A `make TARGET` line, as run here: the tests' own environment, outputs in ``folder``."""
    variables = {
        "VENV": str(VENV),
        "DEMO_DIR": str(folder / "data" / "demo"),
        "DEMO_STORE": str(folder / "data" / "demo.zarr"),
        **{k: f"{v} --workdir {folder}" for k, v in BENCH_ARGS.items()},
    }
    # -o: the environment running these tests is not to be rebuilt by them.
    return ["make", "-C", str(REPO), "-o", f"{VENV}/.installed", target] + [
        f"{k}={v}" for k, v in variables.items()
    ]


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A folder as a fresh clone is after `make preprocess`."""
    folder = tmp_path_factory.mktemp("clone")
    (folder / ".venv").symlink_to(VENV)
    subprocess.run(make("preprocess", folder), check=True, capture_output=True, timeout=600)
    return folder


# `make` targets that already ran and passed in this session's clone, with its outputs.
_MADE: set[tuple[Path, str]] = set()


def run_console(code: str, folder: Path) -> None:
    for line in code.splitlines():
        command = line.split("#", 1)[0].strip()
        if not command:
            continue
        words = shlex.split(command)
        if words[0] == "make":
            (target,) = words[1:]
            if target in ("test", "test-fast") or (folder, target) in _MADE:
                continue  # this run is `make test`; a target shown on two pages runs once
            argv = make(target, folder)
        else:
            # One bash per line, each after `source .venv/bin/activate` as the page asks.
            argv = ["bash", "-c", f"source .venv/bin/activate && {command}"]
        result = subprocess.run(argv, cwd=folder, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"{line}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        if words[0] == "make":
            _MADE.add((folder, target))


@pytest.mark.parametrize(("where", "code"), blocks("console"), ids=lambda x: x if "#" in x else "")
def test_console_blocks_run(clone, where, code):
    run_console(code, clone)
    _RAN.add((clone, where))


# Console blocks that ran and passed in this session's clone.
_RAN: set[tuple[Path, str]] = set()


@pytest.mark.parametrize(("where", "code"), blocks("python"), ids=lambda x: x if "#" in x else "")
def test_python_blocks_run(clone, monkeypatch, where, code):
    monkeypatch.chdir(clone)
    exec(compile(code, where, "exec"), {"__name__": "__docs__"})


class TinyGenerator:
    """A vocoder of the interface the pages' blocks use, randomly initialised and small:
    mels (batch, bands, frames) to audio (batch, 1, frames * hop), with weight norm to
    remove, ``eval``, and Vocos's ``decode`` (batch, (frames - 1) * hop: its centred
    inverse STFT)."""

    def __init__(self, n_bands: int, hop: int) -> None:
        import torch

        parametrizations = torch.nn.utils.parametrizations
        torch.manual_seed(0)
        self.hop = hop
        self.net = torch.nn.Sequential(
            parametrizations.weight_norm(torch.nn.Conv1d(n_bands, 8, 7, padding=3)),
            torch.nn.LeakyReLU(0.1),
            parametrizations.weight_norm(torch.nn.ConvTranspose1d(8, 1, hop, stride=hop)),
            torch.nn.Tanh(),
        )

    def remove_weight_norm(self) -> None:
        import torch

        for layer in (self.net[0], self.net[2]):
            torch.nn.utils.parametrize.remove_parametrizations(layer, "weight")

    def eval(self) -> TinyGenerator:
        self.net.eval()
        return self

    def __call__(self, mel):
        return self.net(mel)

    def decode(self, mel):
        return self(mel)[:, 0, : (mel.shape[-1] - 1) * self.hop]


def with_tiny_generator(code: str) -> str:
    """A block with its ``# checkpoint`` lines replaced by one that makes the vocoder a
    TinyGenerator for the store's bands and hop, and its ``# package`` lines left out."""
    lines, replaced = [], False
    for line in code.splitlines():
        if line.endswith("# package"):
            continue
        if line.endswith("# checkpoint"):
            if not replaced:
                lines.append(
                    "vocoder = TinyGenerator(store.config.n_bands, store.config.hop_length)"
                )
                replaced = True
            continue
        lines.append(line)
    assert replaced, "a block that loads a checkpoint marks the lines that do"
    return "\n".join(lines)


@pytest.mark.parametrize(
    ("where", "code"), blocks("python", checkpoints=True), ids=lambda x: x if "#" in x else ""
)
def test_vocoder_blocks_run_with_a_random_generator_of_their_interface(
    clone, monkeypatch, where, code
):
    monkeypatch.chdir(clone)
    page = where.split("#")[0]
    for made, console in blocks("console"):  # the stores the page makes before them
        if made.startswith(page) and "--preset" in console and (clone, made) not in _RAN:
            run_console(console, clone)
            _RAN.add((clone, made))
    namespace = {"__name__": "__docs__", "TinyGenerator": TinyGenerator}
    exec(compile(with_tiny_generator(code), where, "exec"), namespace)
    (shape,) = re.findall(r"audio = .*# \((\d+), (\d+)\)", code)
    assert namespace["audio"].shape == tuple(map(int, shape))
    assert np.isfinite(namespace["audio"]).all()


@pytest.mark.parametrize(("where", "code"), blocks("pycon"), ids=lambda x: x if "#" in x else "")
def test_sessions_print_what_the_pages_show(clone, monkeypatch, where, code):
    monkeypatch.chdir(clone)
    test = doctest.DocTestParser().get_doctest(code, {}, where, where, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert runner.tries > 3 and runner.failures == 0


def test_every_block_is_of_a_kind_that_runs():
    for page in PAGES:
        for lang, _ in BLOCK.findall(page.read_text()):
            assert lang in ("console", "python", "pycon"), f"{page.name}: ```{lang}"


def test_the_store_format_page_lists_the_schemas_arrays():
    text = (REPO / "docs" / "store-format.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| (\w+) \| \(([\w, ]*)\) \|", text, flags=re.MULTILINE)
    listed = {name: (dtype, tuple(d for d in dims.replace(" ", "").split(",") if d))
              for name, dtype, dims in rows}  # fmt: skip
    assert listed == {spec.name: (spec.dtype, spec.dims) for spec in (*ARRAYS, *RUN_STATE)}


def test_the_demo_store_is_where_the_pages_say(clone):
    assert (clone / "data" / "demo.zarr" / "zarr.json").is_file()
    assert os.path.isdir(clone / "data" / "demo")
