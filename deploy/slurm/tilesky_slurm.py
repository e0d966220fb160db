"""Run tilesky on a SLURM cluster through dask-jobqueue.

    pip install dask-jobqueue
    python deploy/slurm/tilesky_slurm.py IN OUT --jobs 8

The script starts a SLURMCluster whose workers run the tilesky image's
environment (here: the same Python environment on a shared filesystem, or
``apptainer exec tilesky_0.1.0.sif`` via ``job_script_prologue``), writes a
scheduler file and runs the same command line as the compose and Kubernetes
examples:  tilesky run IN OUT --scheduler <scheduler file>.
"""

import argparse
import json
import subprocess
import sys

IMAGE = "tilesky:0.1.0"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--queue", default=None)
    parser.add_argument("--scheduler-file", default="tilesky-scheduler.json")
    args = parser.parse_args()

    from dask_jobqueue import SLURMCluster

    cluster = SLURMCluster(
        cores=1,
        processes=1,
        memory="4GiB",
        walltime="02:00:00",
        queue=args.queue,
        # Run each worker inside the tilesky image built from deploy/Dockerfile.
        python=f"apptainer exec docker://{IMAGE} python",
        scheduler_options={"host": "0.0.0.0"},
    )
    cluster.scale(jobs=args.jobs)
    # Client(scheduler_file=...) reads the address from this JSON file.
    with open(args.scheduler_file, "w") as f:
        json.dump({"address": cluster.scheduler_address}, f)
    cmd = [
        "tilesky",
        "run",
        args.input,
        args.output,
        "--scheduler",
        args.scheduler_file,
    ]
    print(" ".join(cmd), file=sys.stderr)
    try:
        return subprocess.call(cmd)
    finally:
        cluster.close()


if __name__ == "__main__":
    sys.exit(main())
