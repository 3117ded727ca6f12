"""The README's examples run as written and print what it shows."""

import doctest
import re
from pathlib import Path

import numpy as np
import pytest
import zarr

from pipeline.config import SpectrogramConfig
from pipeline.demo import generate_demo
from pipeline.runner import SYNC, preprocess
from pipeline.scaling import image_to_logmel
from pipeline.stats import Range

DEFAULT = SpectrogramConfig.from_options()  # the CLI's defaults, as `make preprocess` uses
README = Path(__file__).resolve().parent.parent / "README.md"


def test_reading_example(dataset, config, tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert len(blocks) == 1
    preprocess(dataset, tmp_path / "data" / "demo.zarr", config, scheduler=SYNC)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(blocks[0], namespace)
    assert "log-mel from" in capsys.readouterr().out
    stats = zarr.open_group(tmp_path / "data" / "demo.zarr").attrs["stats"]
    scale = Range(stats["mean"]["min"], stats["mean"]["max"])
    np.testing.assert_allclose(
        namespace["logmel"], image_to_logmel(namespace["image"], scale), rtol=1e-6, atol=1e-5
    )


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory):
    """What `make preprocess` makes, at the README's paths under a temporary folder."""
    root = tmp_path_factory.mktemp("readme")
    generate_demo(root / "data" / "demo", count=300, seed=0, broken=True)
    preprocess(root / "data" / "demo", root / "data" / "demo.zarr", DEFAULT, scheduler=SYNC)
    return root


def test_reading_back_session(demo_store, monkeypatch):
    """The `>>>` session under "Reading it back" prints what the README shows."""
    text = README.read_text().split("## Reading it back", 1)[1]
    session = re.search(r"```\n(>>> .*?)```", text, flags=re.DOTALL)
    assert session
    monkeypatch.chdir(demo_store)
    test = doctest.DocTestParser().get_doctest(session.group(1), {}, "README", None, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert runner.failures == 0 and runner.tries >= 7


def test_pytorch_example(demo_store, monkeypatch):
    text = README.read_text().split("**PyTorch**", 1)[1]
    code = re.search(r"```\n(.*?)```", text, flags=re.DOTALL)
    assert code
    monkeypatch.chdir(demo_store)
    namespace: dict = {}
    exec(code.group(1), namespace)
    assert tuple(namespace["batch"].shape[1:]) == (1, 128, 87)
    assert len(namespace["dataset"]) == 300
