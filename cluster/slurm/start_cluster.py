"""Start a Dask cluster on SLURM with dask-jobqueue, for `melpipe preprocess --scheduler`.

Run it on a login node (or in a long SLURM job of its own); it submits worker jobs, writes
the scheduler's address to a file and keeps the cluster up until interrupted:

    python cluster/slurm/start_cluster.py --jobs 8 --cores 32 --memory 64GB \\
        --walltime 04:00:00 --interface ib0 --address-file scheduler-address
    melpipe preprocess /shared/audio /shared/out.zarr --scheduler "$(cat scheduler-address)"

Each job runs one single-threaded worker process per core, which suits melpipe's
per-batch tasks, with this folder's Dask settings (cluster/dask/melpipe.yaml).
Needs melpipe's slurm extra (dask-jobqueue).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

DASK_SETTINGS = Path(__file__).resolve().parent.parent / "dask"


def make_cluster(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from dask_jobqueue import SLURMCluster

    return SLURMCluster(
        cores=args.cores,
        processes=args.cores,  # one thread per worker process
        memory=args.memory,
        walltime=args.walltime,
        queue=args.queue,
        account=args.account,
        interface=args.interface,
        job_name="melpipe-worker",
        job_script_prologue=[f"export DASK_CONFIG={DASK_SETTINGS}"],
        # The dashboard shows logs and call stacks: loopback only, reach it by ssh -L.
        scheduler_options={"dashboard_address": "127.0.0.1:8787"},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1, help="SLURM jobs of workers.")
    parser.add_argument("--cores", type=int, default=8, help="Cores per job.")
    parser.add_argument("--memory", default="16GB", help="Memory per job.")
    parser.add_argument("--walltime", default="01:00:00")
    parser.add_argument("--queue", help="SLURM partition.")
    parser.add_argument("--account", help="SLURM account.")
    parser.add_argument("--interface", help="Network interface the workers use, e.g. ib0.")
    parser.add_argument("--address-file", default="scheduler-address")
    parser.add_argument(
        "--print-job-script",
        action="store_true",
        help="Print the job script that would be submitted, and exit.",
    )
    args = parser.parse_args()
    cluster = make_cluster(args)
    try:
        if args.print_job_script:
            print(cluster.job_script())
            return
        cluster.scale(jobs=args.jobs)
        Path(args.address_file).write_text(cluster.scheduler_address + "\n")
        print(f"Scheduler at {cluster.scheduler_address} (written to {args.address_file}).")
        print(f"Dashboard: {cluster.dashboard_link}. Ctrl-C stops the cluster.")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        cluster.close()


if __name__ == "__main__":
    main()
