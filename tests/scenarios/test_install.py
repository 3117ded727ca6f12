"""melpipe works where the names it gave up are taken: in a virtual environment where
another distribution installs a top-level ``pipeline`` package, with a user's own
``pipeline.py`` in the working directory, as beside many training scripts."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.helpers import REPO, write_dataset

OTHER = """raise ImportError("this is another project's pipeline package")\n"""
USERS = """raise SystemExit("the user's own pipeline.py was imported")\n"""


def run(python: Path, *args: str, cwd: Path, timeout: float = 300) -> str:
    result = subprocess.run([str(python), *args], cwd=cwd, capture_output=True, text=True,
                            timeout=timeout)  # fmt: skip
    assert result.returncode == 0, f"{args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def crowded(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A new virtual environment with melpipe and a distribution named ``pipeline``
    installed in it by pip (the rest of what melpipe needs seen from this environment),
    and a working directory with a ``pipeline.py``: that environment's Python, the
    directory and the environment's site-packages."""
    root = tmp_path_factory.mktemp("crowded")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))",
                    cwd=root).strip())  # fmt: skip
    # This environment's packages, processed as a site directory (their .pth files too).
    ours = sysconfig.get_path("purelib")
    (site / "melpipe-test-env.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    other = root / "other"
    (other / "pipeline").mkdir(parents=True)
    (other / "pipeline" / "__init__.py").write_text(OTHER)
    (other / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "pipeline"\nversion = "9.9"\n'
    )
    # melpipe itself, built from a copy of the checkout as `pip install .` builds it, so
    # that the installed package, not this checkout, is what runs there.
    source = root / "source"
    shutil.copytree(REPO / "pipeline", source / "pipeline",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))  # fmt: skip
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for project in (other, source):
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
             "--no-build-isolation", "--target", site, project],
            check=True, capture_output=True, timeout=300,
        )  # fmt: skip
    work = root / "work"
    work.mkdir()
    (work / "pipeline.py").write_text(USERS)
    return python, work, site


@pytest.mark.cluster
def test_import_command_line_local_cluster_and_loader_beside_other_pipelines(crowded, rng):
    python, work, site = crowded
    found = run(python, "-c", "import importlib.metadata as m; print(m.version('pipeline'))",
                cwd=work)  # fmt: skip
    assert found.strip() == "9.9"  # the other distribution is installed there
    clash = subprocess.run([str(python), "-c", "import pipeline"], cwd=work.parent,
                           capture_output=True, text=True)  # fmt: skip
    assert "another project's pipeline package" in clash.stderr  # and it is what `pipeline` is
    where, version = run(python, "-c", "import melpipe; print(melpipe.__file__); "
                         "print(melpipe.__version__)", cwd=work).split()  # fmt: skip
    installed = Path(where).parent
    assert installed.parent == site  # the installed copy, not the checkout
    assert (installed / "py.typed").is_file()
    assert version == run(python, "-m", "melpipe", "--version", cwd=work).split()[-1]
    audio = write_dataset(work / "audio", rng)
    out = run(python, "-m", "melpipe", "preprocess", str(audio), str(work / "s.zarr"),
              "--workers", "2", "--n-mels", "64", cwd=work)  # fmt: skip
    assert "Wrote 10 clips" in out
    loader = (
        "from melpipe.torch import SpectrogramDataset, SpectrogramLoader\n"
        "train, val = SpectrogramDataset('s.zarr').split_by_file(0.2, seed=0)\n"
        "batches = list(SpectrogramLoader(train, batch_size=4, seed=0, num_workers=2))\n"
        "print(len(train), len(val), sum(len(b) for b in batches), tuple(batches[0].shape[1:]))\n"
    )
    n_train, n_val, loaded, shape = run(python, "-c", loader, cwd=work).split("\n")[0].split(" ", 3)
    assert int(n_train) + int(n_val) == 10 and int(n_val) > 0
    assert (loaded, shape) == (n_train, "(1, 64, 87)")
