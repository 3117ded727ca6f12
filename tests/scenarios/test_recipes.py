"""The cluster recipes a user copies: their scripts parse, their manifests are valid YAML
that runs `dask scheduler`/`dask worker`, and the SLURM job script is what we intend.
(The local scripts are also what tests/scenarios/test_distributed.py starts its clusters
with.)"""

import subprocess
import sys

import pytest
import yaml

from tests.helpers import REPO

CLUSTER = REPO / "cluster"


@pytest.mark.parametrize("script", sorted((CLUSTER / "local").glob("*.sh")), ids=lambda p: p.name)
def test_shell_scripts_parse(script):
    subprocess.run(["bash", "-n", script], check=True)


def containers(node):
    """Every container spec anywhere in a manifest."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "containers":
                yield from value
            else:
                yield from containers(value)
    elif isinstance(node, list):
        for item in node:
            yield from containers(item)


@pytest.mark.parametrize("manifest", ["daskcluster.yaml", "daskjob.yaml"])
def test_kubernetes_manifests_run_the_current_dask_commands(manifest):
    (doc,) = yaml.safe_load_all((CLUSTER / "kubernetes" / manifest).read_text())
    assert doc["apiVersion"] == "kubernetes.dask.org/v1"
    commands = {c["name"]: c["args"] for c in containers(doc["spec"])}
    assert commands["scheduler"][:2] == ["dask", "scheduler"]
    assert commands["worker"][:2] == ["dask", "worker"]
    assert "--nthreads" in commands["worker"]
    if manifest == "daskjob.yaml":
        assert "melpipe preprocess" in commands["job"][-1]


def test_no_recipe_uses_the_removed_hyphenated_commands():
    for path in CLUSTER.rglob("*"):
        if path.is_file() and path.suffix in {".yaml", ".sh", ".py", ""}:
            code = [ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#")]
            for old in ("dask-scheduler", "dask-worker"):
                assert not any(old in ln for ln in code), f"{path} uses {old}"


def test_slurm_job_script_runs_single_threaded_workers_with_our_settings():
    result = subprocess.run(
        [
            sys.executable,
            CLUSTER / "slurm" / "start_cluster.py",
            "--print-job-script",
            "--cores",
            "4",
            "--memory",
            "8GB",
            "--queue",
            "short",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    script = result.stdout
    assert "#SBATCH -p short" in script and "#SBATCH --cpus-per-task=4" in script
    assert "--nthreads 1" in script and "--nworkers 4" in script
    assert f"export DASK_CONFIG={CLUSTER / 'dask'}" in script


def test_dask_settings_unset_the_nannys_malloc_trim_threshold():
    import dask.config

    settings = yaml.safe_load((CLUSTER / "dask" / "melpipe.yaml").read_text())
    with dask.config.set(settings):
        environ = dask.config.get("distributed.nanny.pre-spawn-environ")
    assert environ["MALLOC_TRIM_THRESHOLD_"] is None
