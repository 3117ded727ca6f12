"""The README's Python example runs as written and inverts the scaling correctly."""

import re
from pathlib import Path

import numpy as np
import zarr

from pipeline.runner import SYNC, preprocess
from pipeline.scaling import image_to_logmel
from pipeline.stats import Range

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
