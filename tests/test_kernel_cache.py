"""The first run on a cold numba cache says it compiles; a warm one does not."""

import os
import subprocess
import sys

MESSAGE = "compiling kernels (first run only)"


def _cli(args, env):
    return subprocess.run(
        [sys.executable, "-m", "tilesky.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )


def test_cold_cache_is_announced_before_compiling(tmp_path):
    # The notice comes first; the compile itself (~25 s) is not waited for
    # here: the warm-up test below compiles once and shows a warm run says
    # nothing.
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    scene = tmp_path / "scene.zarr"
    sim = _cli(
        ["simulate", str(scene), "--shape", "200", "240", "--scheduler", "threads"],
        {**os.environ},
    )
    assert sim.returncode == 0, sim.stderr
    args = ["run", str(scene), str(tmp_path / "run.zarr"), "--no-report"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tilesky.cli", *args, "--scheduler", "threads"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if MESSAGE in line:
                break
        assert any(MESSAGE in line for line in seen), "".join(seen)
    finally:
        proc.kill()
        proc.wait(timeout=60)


def test_cache_check_follows_numba_cache_dir(tmp_path):
    code = "from tilesky.kernels._cache import kernels_cache_cold as c; print(c())"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env
    )
    assert out.stdout.strip() == "True", out.stderr


def test_install_time_warm_up_leaves_nothing_to_compile(tmp_path):
    # What `make` runs after installing: the first real run then loads
    # every kernel from the cache (no notice, no compile).
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    warm = subprocess.run(
        [sys.executable, "-m", "tilesky.kernels._cache"],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    assert warm.returncode == 0, warm.stderr
    assert "tilesky: numba kernels compiled in" in warm.stdout
    scene = tmp_path / "scene.zarr"
    sim = _cli(
        ["simulate", str(scene), "--shape", "200", "240", "--scheduler", "threads"],
        env,
    )
    assert sim.returncode == 0, sim.stderr
    args = ["run", str(scene), str(tmp_path / "run.zarr"), "--no-report"]
    first = _cli([*args, "--scheduler", "threads"], env)
    assert first.returncode == 0, first.stderr
    assert MESSAGE not in first.stderr
    assert "wrote" in first.stderr
