"""The deploy recipes parse and agree on the image and the command line."""

import re
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
IMAGE = "tilesky:0.1.0"


def _images(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "image" and isinstance(value, str):
                yield value
            else:
                yield from _images(value)
    elif isinstance(node, list):
        for item in node:
            yield from _images(item)


def _commands(node):
    if isinstance(node, dict):
        for value in node.values():
            yield from _commands(value)
    elif isinstance(node, list):
        if node and node[0] == "tilesky":
            yield node
        for item in node:
            yield from _commands(item)


def test_compose_and_kubernetes_parse_and_agree():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    k8s = list(yaml.safe_load_all((DEPLOY / "k8s" / "daskcluster.yaml").read_text()))
    assert {"scheduler", "worker", "s3"} <= set(compose["services"])
    assert compose["services"]["worker"]["deploy"]["replicas"] == 2
    dask_images = {
        compose["services"][name]["image"]
        for name in ("scheduler", "worker", "tilesky")
    }
    assert dask_images == {IMAGE}
    assert set(_images(k8s)) == {IMAGE}
    assert k8s[0]["kind"] == "DaskCluster"
    runs = [c[:2] for c in _commands(compose)] + [c[:2] for c in _commands(k8s)]
    assert runs and all(c == ["tilesky", "run"] for c in runs)
    for cmd in [*_commands(compose), *_commands(k8s)]:
        assert "--scheduler" in cmd


def test_slurm_and_dockerfile_name_the_same_image_and_command():
    py = (DEPLOY / "slurm" / "tilesky_slurm.py").read_text()
    sbatch = (DEPLOY / "slurm" / "tilesky.sbatch").read_text()
    assert f'IMAGE = "{IMAGE}"' in py
    assert f"docker://{IMAGE}" in sbatch
    flat = re.sub(r"\s+", "", py)
    assert '["tilesky","run",args.input,args.output,"--scheduler"' in flat
    assert re.search(r"tilesky run \S+ \S+ --scheduler", sbatch)
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert f"-t {IMAGE}" in dockerfile
    compile(py, "tilesky_slurm.py", "exec")


def test_image_workers_start_without_the_malloc_trim_threshold():
    """The image's /etc/dask file removes distributed's MALLOC_TRIM_THRESHOLD_
    from the workers' environment and keeps the thread caps."""
    import dask
    from distributed.nanny import _get_env_variables

    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "COPY deploy/dask/tilesky.yaml /etc/dask/tilesky.yaml" in dockerfile
    assert "/etc/dask" in dask.config.paths
    settings = yaml.safe_load((DEPLOY / "dask" / "tilesky.yaml").read_text())
    merged = dask.config.update(dask.config.merge(dask.config.config), settings)
    with dask.config.set(merged):
        env = _get_env_variables("distributed.nanny.pre-spawn-environ")
    assert "MALLOC_TRIM_THRESHOLD_" not in env
    assert env["OMP_NUM_THREADS"] == "1"
