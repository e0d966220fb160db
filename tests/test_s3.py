"""tilesky against a real S3-compatible server (moto) on loopback.

The server enforces credentials: moto checks signatures once its first
``INITIAL_NO_AUTH_ACTION_COUNT`` requests (used here to create an IAM user,
its access key and an allow-all policy) have been served. The environment
therefore carries that user's key, not moto's usual ``testing`` pair, so a
wrong or missing credential is really refused.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dask
import numpy as np
import pytest
import zarr
from astropy.io import fits

from tilesky.cli import main
from tilesky.simulate import write_simulation
from tilesky.store import open_run

s3fs = pytest.importorskip("s3fs")
boto3 = pytest.importorskip("boto3")

BIN = Path(sys.executable).parent
BUCKET = "tilesky-test"
SHAPE = (300, 450)
CHUNKS = "150"
# Reports (plots) are not what these tests are about.
RUN_OPTS = ("--chunks", CHUNKS, "--no-report")
WRONG_SECRET = "wrong-secret-Zq81xV"
START_TIMEOUT = 60


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    """``moto_server`` on 127.0.0.1 with authentication switched on."""

    def __init__(self, log_dir: Path):
        self.log = open(log_dir / "moto.log", "wb")
        self.proc = None
        for _ in range(3):  # another process may take the port first
            self.port = _free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            self.proc = subprocess.Popen(
                [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=self.log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="3"),
            )
            if self._wait_up():
                return
            self.stop()
        pytest.fail(f"moto_server did not start:\n{(log_dir / 'moto.log').read_text()}")

    def _wait_up(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                # The moto API is not an AWS action: it does not count.
                with urllib.request.urlopen(self.url + "/moto-api/", timeout=2):
                    return True
            except OSError:
                time.sleep(0.1)
        return False

    def create_user(self) -> tuple[str, str]:
        """The three unauthenticated actions: a user, its key, a policy."""
        iam = boto3.client(
            "iam",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
        )
        iam.create_user(UserName="tilesky")
        key = iam.create_access_key(UserName="tilesky")["AccessKey"]
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
        }
        iam.put_user_policy(
            UserName="tilesky", PolicyName="all", PolicyDocument=json.dumps(policy)
        )
        return key["AccessKeyId"], key["SecretAccessKey"]

    def stop(self) -> None:
        if self.proc is not None:
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                try:
                    os.killpg(self.proc.pid, sig)
                except (ProcessLookupError, PermissionError):
                    break
                try:
                    self.proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self.log.close()


@pytest.fixture(scope="module")
def moto(tmp_path_factory, request):
    server = MotoServer(tmp_path_factory.mktemp("moto"))
    request.addfinalizer(server.stop)
    server.key, server.secret = server.create_user()
    return server


@pytest.fixture(autouse=True)
def aws_env(monkeypatch, moto):
    """Credentials from the environment only; no profile, no real AWS."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto.key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto.secret)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    for name in (
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
    ):
        monkeypatch.delenv(name, raising=False)
    # fsspec caches filesystems by their arguments, not by the environment.
    _close_sessions()
    yield
    _close_sessions()


def _close_sessions():
    """Close the cached filesystems' aiohttp sessions, then drop them.

    Dropped unclosed, each session is collected at interpreter exit, when
    s3fs can only close its sockets, and aiohttp warns "Unclosed client
    session" after the test run.
    """
    from fsspec.asyn import sync
    from zarr.core.sync import sync as zarr_sync

    for fs in list(s3fs.S3FileSystem._cache.values()):
        creator = getattr(fs, "_s3creator", None)
        if creator is None:
            continue
        try:
            if fs.asynchronous:
                # Zarr's stores: their sessions live on zarr's event loop.
                zarr_sync(creator.__aexit__(None, None, None), timeout=10)
            elif fs.loop is not None and fs.loop.is_running():
                sync(fs.loop, creator.__aexit__, None, None, None, timeout=10)
            else:
                continue
        except Exception:  # already closed, or its loop is gone: nothing to do
            continue
        fs._s3 = fs._s3creator = None
    s3fs.S3FileSystem.clear_instance_cache()


def _fs(moto, **kw):
    return s3fs.S3FileSystem(
        key=moto.key,
        secret=moto.secret,
        endpoint_url=moto.url,
        **kw,
    )


@pytest.fixture(scope="module")
def data(moto, tmp_path_factory):
    """The scene on S3 as Zarr (written there directly) and as FITS, and the
    run of its local FITS copy."""
    opts = {"key": moto.key, "secret": moto.secret, "endpoint_url": moto.url}
    fs = _fs(moto)
    fs.mkdir(BUCKET)
    with dask.config.set(scheduler="threads"):
        ds = write_simulation(
            f"s3://{BUCKET}/scene.zarr",
            shape=SHAPE,
            seed=4,
            chunks=150,
            storage_options=opts,
        )
        scene = np.asarray(ds.scene.values)
    local = tmp_path_factory.mktemp("s3data")
    fits.PrimaryHDU(scene).writeto(local / "scene.fits")
    fs.put(str(local / "scene.fits"), f"{BUCKET}/scene.fits")
    out = local / "local_run.zarr"
    assert (
        main(
            [
                "run",
                str(local / "scene.fits"),
                str(out),
                *RUN_OPTS,
                "--scheduler",
                "threads",
            ]
        )
        == 0
    )
    return {"arrays": _arrays(str(out)), "local_fits": str(local / "scene.fits")}


def _arrays(url: str, storage_options: dict | None = None) -> dict:
    kw = {"storage_options": storage_options} if storage_options else {}
    group = zarr.open_group(url, mode="r", **kw)
    names = sorted(name for name, _ in group.arrays())
    assert {"background", "background_rms", "mask", "background_mesh"} <= set(names), (
        names
    )
    return {name: group[name][...] for name in names}


def _assert_same(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for name, ref in want.items():
        assert got[name].dtype == ref.dtype, name
        assert np.array_equal(got[name], ref, equal_nan=ref.dtype.kind == "f"), name


def _assert_no_secret(moto, out_key: str, captured) -> None:
    """Neither the store's attributes nor the console show a credential."""
    root = _fs(moto).cat(f"{BUCKET}/{out_key}/zarr.json").decode()
    for secret in (moto.secret, moto.key):
        assert secret not in root
        assert secret not in captured.out
        assert secret not in captured.err


def _run(*args: str) -> int:
    return main(["run", *args, *RUN_OPTS, "--scheduler", "threads"])


def _one_line_error(code: int, captured) -> str:
    err = captured.err.strip()
    assert code == 1, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("tilesky: error:"), lines[0]
    return lines[0]


def test_zarr_on_s3_with_endpoint_option(moto, data, capsys):
    out = f"s3://{BUCKET}/from_zarr.zarr"
    code = _run(
        f"s3://{BUCKET}/scene.zarr", out, "--storage-option", f"endpoint_url={moto.url}"
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    # Progress bars are for terminals; stderr is captured here.
    assert "tilesky: writing" not in captured.err
    opts = {"endpoint_url": moto.url}
    ds = open_run(out, storage_options=opts)
    assert ds.attrs["input"]["kind"] == "zarr"
    assert ds.attrs["input"]["source"] == f"s3://{BUCKET}/scene.zarr"
    _assert_same(_arrays(out, opts), data["arrays"])
    _assert_no_secret(moto, "from_zarr.zarr", captured)


def test_default_cluster_keeps_in_memory_and_writes_to_s3(moto, data, capsys):
    """The default in-process cluster: intermediates kept in its memory,
    blocks written to the object store behind the run; same arrays."""
    out = f"s3://{BUCKET}/default_cluster.zarr"
    opts = ["--storage-option", f"endpoint_url={moto.url}"]
    code = main(["run", f"s3://{BUCKET}/scene.zarr", out, *RUN_OPTS, *opts])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "one in-process worker" in captured.err
    storage = {"endpoint_url": moto.url}
    ds = open_run(out, storage_options=storage)
    assert ds.attrs["tilesky_status"] == "complete"
    _assert_same(_arrays(out, storage), data["arrays"])
    assert not _fs(moto).exists(f"{BUCKET}/default_cluster.zarr/_work")
    _assert_no_secret(moto, "default_cluster.zarr", captured)


def test_fits_on_s3_with_credentials_as_options(moto, data, capsys, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    out = f"s3://{BUCKET}/from_fits.zarr"
    code = _run(
        f"s3://{BUCKET}/scene.fits",
        out,
        "--storage-option",
        f"endpoint_url={moto.url}",
        "--storage-option",
        f"key={moto.key}",
        "--storage-option",
        f"secret={moto.secret}",
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    opts = {"endpoint_url": moto.url, "key": moto.key, "secret": moto.secret}
    ds = open_run(out, storage_options=opts)
    assert ds.attrs["input"]["kind"] == "fits"
    _assert_same(_arrays(out, opts), data["arrays"])
    _assert_no_secret(moto, "from_fits.zarr", captured)


def test_endpoint_from_environment(moto, data, capsys, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.url)
    out = f"s3://{BUCKET}/from_env.zarr"
    code = _run(f"s3://{BUCKET}/scene.zarr", out)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert open_run(out).attrs["tilesky_status"] == "complete"
    _assert_same(_arrays(out), data["arrays"])


def test_wrong_bucket_is_one_line_and_leaves_nothing(moto, data, capsys):
    fs = _fs(moto)
    endpoint = ["--storage-option", f"endpoint_url={moto.url}"]
    code = _run(
        "s3://no-such-bucket-in/scene.zarr", f"s3://{BUCKET}/never.zarr", *endpoint
    )
    line = _one_line_error(code, capsys.readouterr())
    assert "no-such-bucket-in" in line
    assert not fs.exists(f"{BUCKET}/never.zarr")

    code = _run(
        f"s3://{BUCKET}/scene.zarr", "s3://no-such-bucket-out/out.zarr", *endpoint
    )
    line = _one_line_error(code, capsys.readouterr())
    assert "no-such-bucket-out" in line
    fs.invalidate_cache()
    assert "no-such-bucket-out" not in {b.rstrip("/") for b in fs.ls("")}


def test_bad_credentials_are_one_line_and_never_shown(moto, data, capsys, monkeypatch):
    fs = _fs(moto)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    out = f"s3://{BUCKET}/bad_secret.zarr"
    code = _run(
        f"s3://{BUCKET}/scene.zarr",
        out,
        "--storage-option",
        f"endpoint_url={moto.url}",
        "--storage-option",
        f"key={moto.key}",
        "--storage-option",
        f"secret={WRONG_SECRET}",
    )
    captured = capsys.readouterr()
    line = _one_line_error(code, captured)
    assert WRONG_SECRET not in captured.err + captured.out
    assert "scene.zarr" in line and "check the credentials" in line, line
    assert not fs.exists(f"{BUCKET}/bad_secret.zarr")

    # A local input and an output the secret cannot write.
    code = _run(
        data["local_fits"],
        out,
        "--storage-option",
        f"endpoint_url={moto.url}",
        "--storage-option",
        f"key={moto.key}",
        "--storage-option",
        f"secret={WRONG_SECRET}",
    )
    captured = capsys.readouterr()
    line = _one_line_error(code, captured)
    assert WRONG_SECRET not in captured.err + captured.out
    assert "bad_secret.zarr" in line and "check the credentials" in line, line
    assert not fs.exists(f"{BUCKET}/bad_secret.zarr")

    # An access key the server does not know, from the environment.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIANOSUCHKEY0000000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", WRONG_SECRET)
    code = _run(
        f"s3://{BUCKET}/scene.fits", out, "--storage-option", f"endpoint_url={moto.url}"
    )
    captured = capsys.readouterr()
    line = _one_line_error(code, captured)
    assert WRONG_SECRET not in captured.err + captured.out
    assert "scene.fits" in line and "check the credentials" in line, line
    assert not fs.exists(f"{BUCKET}/bad_secret.zarr")


# -- one writer per object-store output: the lease ------------------------------


def _lease_record(run: str, *, age: float = 0.0) -> bytes:
    # Another host: its pid cannot be checked from here, only its renewals.
    record = {
        "run": run,
        "pid": 4242,
        "host": "other-host.example",
        "time": time.time() - age,
    }
    return json.dumps(record).encode()


def test_an_s3_run_holds_a_lease_and_a_second_run_is_refused(moto, data, capsys):
    out = f"s3://{BUCKET}/leased.zarr"
    opt = ("--storage-option", f"endpoint_url={moto.url}")
    assert _run(f"s3://{BUCKET}/scene.zarr", out, *opt) == 0
    capsys.readouterr()
    fs = _fs(moto)
    lease = f"{BUCKET}/leased.zarr/.tilesky-lease"
    assert not fs.exists(lease)  # released at the end
    # Another run, on another host, holds the output now (renewed just now).
    fs.pipe_file(lease, _lease_record("someone-else"))
    code = _run(f"s3://{BUCKET}/scene.zarr", out, *opt, "--overwrite")
    line = _one_line_error(code, capsys.readouterr())
    assert "being written by another run" in line
    assert "other-host.example" in line and ".tilesky-lease" in line
    opts = {"endpoint_url": moto.url}
    assert open_run(out, storage_options=opts).attrs["tilesky_status"] == "complete"
    _assert_same(_arrays(out, opts), data["arrays"])
    assert json.loads(fs.cat_file(lease))["run"] == "someone-else"


def test_a_stale_lease_is_taken_over(moto, data, capsys):
    out = f"s3://{BUCKET}/stale_lease.zarr"
    fs = _fs(moto)
    lease = f"{BUCKET}/stale_lease.zarr/.tilesky-lease"
    # A run that died ten minutes ago left its lease (and nothing else).
    fs.pipe_file(lease, _lease_record("dead-run", age=600))
    code = _run(
        f"s3://{BUCKET}/scene.zarr",
        out,
        "--storage-option",
        f"endpoint_url={moto.url}",
        "--overwrite",
    )
    assert code == 0, capsys.readouterr().err
    opts = {"endpoint_url": moto.url}
    assert open_run(out, storage_options=opts).attrs["tilesky_status"] == "complete"
    assert not fs.exists(lease)


def test_a_run_whose_lease_was_taken_over_is_not_marked_complete(moto):
    from tilesky.errors import StoreError
    from tilesky.store import RunStore

    out = f"s3://{BUCKET}/lease_lost.zarr"
    opts = {"endpoint_url": moto.url}
    store = RunStore(out, storage_options=opts)
    assert store.create(attrs={"config": {}})
    fs = _fs(moto)
    lease = f"{BUCKET}/lease_lost.zarr/.tilesky-lease"
    assert json.loads(fs.cat_file(lease))["pid"] == os.getpid()
    # Another run took the output over while this one was writing.
    fs.pipe_file(lease, _lease_record("usurper"))
    with pytest.raises(StoreError, match="lease was taken over by process 4242"):
        store.finish()
    assert (
        zarr.open_group(out, mode="r", storage_options=opts).attrs["tilesky_status"]
        == "running"
    )
    store.release()
    assert json.loads(fs.cat_file(lease))["run"] == "usurper"  # not ours to delete


def test_s3_input_with_a_local_output(moto, data, capsys, tmp_path):
    out = tmp_path / "from_s3.zarr"
    code = _run(
        f"s3://{BUCKET}/scene.zarr",
        str(out),
        "--storage-option",
        f"endpoint_url={moto.url}",
    )
    assert code == 0, capsys.readouterr().err
    assert open_run(str(out)).attrs["tilesky_status"] == "complete"
    _assert_same(_arrays(str(out)), data["arrays"])
    assert not (out / ".tilesky-lock").exists()


def test_a_held_lease_is_renewed_and_released(moto):
    from tilesky._lease import Lease
    from tilesky.errors import StoreError

    fs = _fs(moto)
    path = f"{BUCKET}/renewed.zarr/.tilesky-lease"
    lease = Lease(
        f"s3://{BUCKET}/renewed.zarr",
        {"endpoint_url": moto.url},
        "run-a",
        "renewed.zarr",
        seconds=0.6,
    )
    lease.take()
    first = json.loads(fs.cat_file(path))["time"]
    deadline = time.monotonic() + 10
    while json.loads(fs.cat_file(path))["time"] == first:
        assert time.monotonic() < deadline, "the lease was never renewed"
        time.sleep(0.05)
    lease.confirm()
    # A second holder is refused while the first renews.
    other = Lease(
        f"s3://{BUCKET}/renewed.zarr", {"endpoint_url": moto.url}, "run-b", "x"
    )
    with pytest.raises(StoreError, match="being written by another run"):
        other.take()
    lease.release()
    assert not fs.exists(path)
