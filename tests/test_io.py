"""Tests for tilesky.io: every kind of input, box-aligned chunks, lazy FITS
sections, and one-line InputErrors for bad inputs."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import shutil
import tracemalloc
import uuid

import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr
from astropy.io import fits
from astropy.io.fits.hdu import image as fits_image
from astropy.io.fits.hdu.compressed import section as fits_comp_section
from astropy.wcs import WCS
from dask.callbacks import Callback

import tilesky.io._fits
from tilesky.io import (
    DEFAULT_CHUNK,
    ImageInput,
    InputError,
    aligned_chunks,
    is_url,
    open_image,
    parse_storage_options,
    run_tiles,
    strip_credentials,
)

RNG = np.random.default_rng(0)


class _NoCompute(Callback):
    """Fail if dask computes anything while the block is active."""

    def _start(self, dsk):
        raise AssertionError("dask computed while building the graph")


def _blocks_equal(image: ImageInput, expected: np.ndarray) -> None:
    """Compute each chunk on its own and compare it with the expected slice."""
    arr = image.data
    assert arr.shape == expected.shape
    offsets = [np.cumsum((0, *c)) for c in arr.chunks]
    for i in range(arr.numblocks[0]):
        for j in range(arr.numblocks[1]):
            block = arr.blocks[i, j].compute(scheduler="sync")
            assert block.dtype == arr.dtype
            assert block.dtype.isnative
            rows = slice(offsets[0][i], offsets[0][i + 1])
            cols = slice(offsets[1][j], offsets[1][j + 1])
            np.testing.assert_array_equal(block, expected[rows, cols])


def _check_chunks(arr: da.Array, edge: tuple[int, int]) -> None:
    for axis_chunks, e in zip(arr.chunks, edge, strict=True):
        assert all(c == e for c in axis_chunks[:-1])
        assert 0 < axis_chunks[-1] <= e


def _tan_header(shape):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.1, 2.2]
    w.wcs.crpix = [shape[1] / 2, shape[0] / 2]
    w.wcs.cdelt = [-0.0001, 0.0001]
    return w.to_header()


# --------------------------------------------------------------------------
# helpers


def test_aligned_chunks_rounds_up_to_box_multiples():
    assert aligned_chunks((500, 700), 100, 6) == (102, 102)
    assert aligned_chunks((5000, 5000), None, 10) == (1030, 1030)
    assert aligned_chunks((5000, 5000), None, 1) == (DEFAULT_CHUNK, DEFAULT_CHUNK)
    assert aligned_chunks((500, 700), (64, 100), (10, 50)) == (70, 100)
    # -1 is a whole axis; a chunk larger than the image is one box-rounded chunk
    assert aligned_chunks((500, 700), (-1, 64), (10, 50)) == (500, 100)
    assert aligned_chunks((95, 705), 1024, 10) == (100, 710)
    for bad in (0, -3, (1, 2, 3), 2.5, True):
        with pytest.raises(
            InputError, match=r"^chunks=.* is not valid; use a positive int"
        ):
            aligned_chunks((10, 10), bad, 2)
    with pytest.raises(InputError, match=r"^box_size=0 is not valid"):
        aligned_chunks((10, 10), 4, 0)


def test_run_tiles_are_large_whole_multiples_of_the_input_chunks():
    # ~2048 px a side, whole input chunks, box-aligned.
    assert run_tiles((6000, 6000), (1020, 1020), 30, threads=2) == (2040, 2040)
    assert run_tiles((16384, 16384), (1000, 500), 10, threads=64) == (2000, 2000)
    assert run_tiles((9000, 9000), (4096, 4096), 32, threads=2) == (4096, 4096)
    # Strips of chunks: about the same area, not 2048 of their rows.
    assert run_tiles((20000, 16384), (1, 16384), 1, threads=2) == (256, 16384)
    # Fewer tiles than threads: one row band per thread, the full width...
    assert run_tiles((2000, 2000), (1020, 1020), 30, threads=2) == (1020, 2010)
    assert run_tiles((3000, 1000), (600, 600), 10, threads=3) == (1000, 1000)
    # ... unless bands would be thin: then the input's chunks.
    assert run_tiles((2000, 2000), (1020, 1020), 30, threads=8) == (1020, 1020)
    assert run_tiles((330, 390), (150, 150), 30, threads=2) == (150, 150)
    # Every tile edge stays a box multiple.
    for shape in ((2000, 2000), (6001, 4999), (777, 12000)):
        ty, tx = run_tiles(shape, (90, 120), (30, 40), threads=4)
        assert ty % 30 == 0 and tx % 40 == 0


def test_is_url_and_strip_credentials():
    assert is_url("s3://bucket/x.zarr")
    assert is_url("memory://x.zarr")
    assert is_url("file:///tmp/x.fits")
    assert is_url("simplecache::s3://bucket/x.fits")
    assert not is_url("/data/x.fits")
    assert not is_url("C:\\data\\x.fits")
    assert not is_url(os.path.join("relative", "x.zarr"))
    assert strip_credentials("s3://AKIA:se/cr+et@bucket/x.zarr") == "s3://bucket/x.zarr"
    assert strip_credentials("s3://user@bucket/a@b/x.zarr") == "s3://bucket/a@b/x.zarr"
    assert strip_credentials("s3://bucket/dir@v2/x.zarr") == "s3://bucket/dir@v2/x.zarr"
    assert (
        strip_credentials("https://u:p@host:9000/x.fits") == "https://host:9000/x.fits"
    )
    signed = "https://h/x.fits?X-Amz-Credential=A&X-Amz-Signature=s&versionId=3&token=t"
    assert strip_credentials(signed) == "https://h/x.fits?versionId=3"
    assert strip_credentials("simplecache::s3://k:s@b/x") == "simplecache::s3://b/x"
    assert strip_credentials("/local/path.fits") == "/local/path.fits"


def test_credentials_never_reach_messages():
    from tilesky.io._urls import scrub, secret_values

    options = {
        "endpoint_url": "http://minio:9000",
        "key": "AKIAEXAMPLE",
        "client_kwargs": {"aws_secret_access_key": "wJalr/XUtnFEMI"},
        "anon": False,
    }
    url = "s3://user:pa55/word@bucket/x.zarr?X-Amz-Signature=deadbeef&v=1"
    secrets = secret_values(url, options)
    assert set(secrets) == {
        "AKIAEXAMPLE",
        "wJalr/XUtnFEMI",
        "user",
        "pa55/word",
        "deadbeef",
    }
    text = scrub(
        "failed for AKIAEXAMPLE with wJalr/XUtnFEMI at http://minio:9000", secrets
    )
    assert text == "failed for *** with *** at http://minio:9000"


def test_parse_storage_options():
    opts = parse_storage_options(
        [
            "endpoint_url=http://127.0.0.1:9000",
            "anon=False",
            "use_ssl=true",
            "default_block_size=1048576",
            "timeout=2.5",
            "client_kwargs.region_name=eu-west-1",
            "key=abc=def",
        ]
    )
    assert opts == {
        "endpoint_url": "http://127.0.0.1:9000",
        "anon": False,
        "use_ssl": True,
        "default_block_size": 1048576,
        "timeout": 2.5,
        "client_kwargs": {"region_name": "eu-west-1"},
        "key": "abc=def",
    }
    assert parse_storage_options([]) == {}
    for bad in ("novalue", "=x", "a..b=1"):
        with pytest.raises(InputError, match=r"storage option .* is not key=value"):
            parse_storage_options([bad])


# --------------------------------------------------------------------------
# in-memory arrays


def test_numpy_big_endian_becomes_native_float32():
    values = RNG.normal(size=(250, 300)).astype(">f4")
    image = open_image(values, chunks=100, box_size=6)
    assert image.data.dtype == np.float32
    assert image.data.chunksize == (102, 102)
    _check_chunks(image.data, (102, 102))
    _blocks_equal(image, values.astype(np.float32))
    assert image.header is None and image.coords is None
    ident = json.loads(json.dumps(image.identity))
    assert ident["kind"] == "numpy"
    assert ident["shape"] == [250, 300]
    assert ident["fingerprint"]["token"]


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [("i2", np.float32), ("u1", np.float32), ("f2", np.float32), ("f8", np.float64)],
)
def test_numpy_dtypes(dtype, expected):
    values = (RNG.random((40, 50)) * 100).astype(dtype)
    image = open_image(values, box_size=5)
    assert image.data.dtype == expected
    np.testing.assert_array_equal(image.data.compute(), values.astype(expected))


def test_masked_array_becomes_nan():
    values = np.ma.masked_greater(np.arange(200, dtype="f4").reshape(10, 20), 150)
    out = open_image(values, box_size=2).data.compute()
    assert np.isnan(out[values.mask]).all()
    np.testing.assert_array_equal(out[~values.mask], values.compressed())


def test_dask_input_keeps_own_chunks_rounded_and_stays_lazy():
    values = RNG.normal(size=(330, 410))
    arr = da.from_array(values, chunks=(100, 100))
    with _NoCompute():
        image = open_image(arr, box_size=6)
    assert image.data.dtype == np.float64
    _check_chunks(image.data, (102, 102))
    assert image.identity["kind"] == "dask"
    assert image.identity["fingerprint"] == {"dask_name": arr.name}
    np.testing.assert_array_equal(image.data.compute(), values)
    # explicit chunks win over the input's
    image = open_image(arr.astype("i4"), chunks=(50, 64), box_size=(10, 32))
    assert image.data.dtype == np.float32
    _check_chunks(image.data, (50, 64))


def test_xarray_dataarray_keeps_coords_and_dims():
    values = RNG.normal(size=(60, 80)).astype("f4")
    header = _tan_header(values.shape).tostring()
    arr = xr.DataArray(
        da.from_array(values, chunks=25),
        dims=("dec", "ra"),
        coords={"dec": np.linspace(-1, 1, 60), "ra": np.arange(80.0)},
        attrs={"units": "adu", "fits_header": header},
        name="sky",
    )
    with _NoCompute():
        image = open_image(arr, box_size=4)
    _check_chunks(image.data, (28, 28))
    np.testing.assert_array_equal(image.data.compute(), values)
    assert image.identity["kind"] == "xarray"
    assert image.identity["dims"] == ["dec", "ra"]
    assert image.identity["variable"] == "sky"
    assert image.header == header
    assert image.coords["dims"] == ("dec", "ra")
    assert image.coords["attrs"]["units"] == "adu"
    rebuilt = xr.DataArray(
        image.data, **{k: image.coords[k] for k in ("dims", "coords", "attrs", "name")}
    )
    xr.testing.assert_equal(rebuilt.compute(), arr.compute())
    json.dumps(image.identity)


def test_xarray_numpy_backed_and_dataset():
    values = np.arange(30 * 40, dtype="i4").reshape(30, 40)
    image = open_image(xr.DataArray(values), box_size=3)
    assert image.data.dtype == np.float32
    assert image.identity["dims"] == ["dim_0", "dim_1"]
    np.testing.assert_array_equal(image.data.compute(), values)
    ds = xr.Dataset(
        {"truth": (("y", "x"), values * 0.0), "scene": (("y", "x"), values * 2.0)}
    )
    image = open_image(ds, box_size=3)
    assert image.identity["variable"] == "scene"
    np.testing.assert_array_equal(image.data.compute(), values * 2.0)
    image = open_image(ds, variable="truth", box_size=3)
    assert image.identity["variable"] == "truth"


# --------------------------------------------------------------------------
# Zarr


def _write_group(store, zarr_format=3, default=True):
    g = zarr.open_group(store, mode="w", zarr_format=zarr_format)
    if default:
        g.attrs["tilesky_default_variable"] = "scene"
        g.attrs["fits_header"] = _tan_header((60, 70)).tostring()
    scene = RNG.normal(size=(60, 70)).astype("f4")
    g.create_array("scene", shape=scene.shape, chunks=(20, 25), dtype="f4")[:] = scene
    g.create_array("truth", shape=scene.shape, chunks=(20, 25), dtype="f8")[:] = (
        scene * 2
    )
    g.create_array("noise_map", shape=(60, 70), chunks=(60, 70), dtype="f4")[:] = 1
    g.create_array("x", shape=(70,), dtype="f8")[:] = np.arange(70)
    return scene


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_zarr_group_default_and_variable(tmp_path, zarr_format):
    path = tmp_path / "scene.zarr"
    scene = _write_group(str(path), zarr_format=zarr_format)
    with _NoCompute():
        image = open_image(path, box_size=4)
    assert image.identity["kind"] == "zarr"
    assert image.identity["variable"] == "scene"
    assert image.identity["source"] == str(path)
    # the zarr chunks (20, 25) rounded up to box multiples
    _check_chunks(image.data, (20, 28))
    # one reading task per chunk, nothing else
    assert len(image.data.__dask_graph__()) == np.prod(image.data.numblocks)
    _blocks_equal(image, scene)
    assert WCS(fits.Header.fromstring(image.header)).wcs.ctype[0] == "RA---TAN"
    truth = open_image(str(path), variable="truth", chunks=32, box_size=4)
    assert truth.data.dtype == np.float64
    _check_chunks(truth.data, (32, 32))
    np.testing.assert_array_equal(truth.data.compute(), scene * 2.0)
    # the graph pickles (distributed workers unpickle it)
    again = pickle.loads(pickle.dumps(truth.data))
    np.testing.assert_array_equal(again.compute(), scene * 2.0)
    json.dumps(image.identity)


def test_zarr_default_variable_rules(tmp_path):
    g = zarr.open_group(str(tmp_path / "a.zarr"), mode="w")
    g.create_array("coadd", shape=(20, 30), dtype="f4")[:] = 3
    g.create_array("y", shape=(20,), dtype="f4")
    assert open_image(tmp_path / "a.zarr").identity["variable"] == "coadd"
    g.create_array("image", shape=(20, 30), dtype="f4")
    assert open_image(tmp_path / "a.zarr").identity["variable"] == "image"
    g = zarr.open_group(str(tmp_path / "b.zarr"), mode="w")
    g.create_array("a", shape=(20, 30), dtype="f4")
    g.create_array("b", shape=(20, 30), dtype="f4")
    with pytest.raises(
        InputError,
        match=r"holds several arrays .*variable= \(available: a \(20, 30\), b",
    ):
        open_image(tmp_path / "b.zarr")
    # a path straight to one array
    image = open_image(tmp_path / "a.zarr" / "coadd")
    assert image.identity["variable"] is None
    assert float(image.data.max().compute()) == 3.0


def test_zarr_missing_variable_lists_options(tmp_path):
    _write_group(str(tmp_path / "s.zarr"))
    with pytest.raises(
        InputError,
        match=(
            r"^variable='nope' not found in Zarr group .*available arrays:"
            r" .*noise_map \(60, 70\).*scene \(60, 70\).*truth"
        ),
    ):
        open_image(tmp_path / "s.zarr", variable="nope")


def test_memory_zarr_url():
    url = f"memory://{uuid.uuid4().hex}/scene.zarr"
    scene = _write_group(url)
    image = open_image(url, chunks=30, box_size=(5, 7))
    assert image.identity["source"] == url
    _check_chunks(image.data, (30, 35))
    _blocks_equal(image, scene)


# --------------------------------------------------------------------------
# FITS


def _expected(path, ext=None):
    data = fits.getdata(path, ext=ext) if ext is not None else fits.getdata(path)
    return np.asarray(
        data, dtype=np.float64 if data.dtype == np.float64 else np.float32
    )


def _assert_blocks_close_to_astropy(image, path, ext=None):
    _blocks_equal(image, _expected(path, ext))


def test_fits_big_endian_float_with_wcs(tmp_path):
    values = RNG.normal(size=(130, 170)).astype(">f4")
    header = _tan_header(values.shape)
    path = tmp_path / "img.fits"
    fits.PrimaryHDU(values, header=header).writeto(path)
    with _NoCompute():
        image = open_image(path, chunks=40, box_size=(8, 10))
    assert image.data.dtype == np.dtype("float32")
    _check_chunks(image.data, (40, 40))
    assert len(image.data.__dask_graph__()) == np.prod(image.data.numblocks)
    _assert_blocks_close_to_astropy(image, path)
    carried = fits.Header.fromstring(image.header)
    assert carried["CTYPE1"] == "RA---TAN" and carried["CRVAL2"] == 2.2
    assert WCS(carried).wcs.compare(WCS(header).wcs)
    ident = json.loads(json.dumps(image.identity))
    assert ident["kind"] == "fits" and ident["hdu"] == 0 and ident["bitpix"] == -32
    assert ident["fingerprint"]["size"] == path.stat().st_size
    assert ident["fingerprint"]["header_sha256"]
    again = pickle.loads(pickle.dumps(image.data))
    np.testing.assert_array_equal(again.compute(), values)


def _scaled_int16(path, *, bzero, bscale, blank=None):
    raw = RNG.integers(-32768, 32767, size=(90, 110), dtype=np.int16)
    hdu = fits.PrimaryHDU(raw)
    hdu.header["BZERO"] = bzero
    hdu.header["BSCALE"] = bscale
    if blank is not None:
        raw[3:7, 10:20] = blank
        hdu.header["BLANK"] = blank
    hdu.writeto(path)


@pytest.mark.parametrize(
    ("bzero", "bscale", "blank"),
    [(100.5, 0.25, None), (32768, 1, None), (-7.0, 2.0, -32768)],
    ids=["bscale-bzero", "uint16", "blank"],
)
def test_fits_scaled_integers_match_astropy(tmp_path, bzero, bscale, blank):
    path = tmp_path / "int.fits"
    _scaled_int16(path, bzero=bzero, bscale=bscale, blank=blank)
    image = open_image(path, chunks=32, box_size=4)
    assert image.data.dtype == np.float32
    expected = fits.getdata(path)
    if bzero == 32768:
        assert expected.dtype == np.uint16 and expected.max() > 32767
    if blank is not None:
        assert np.isnan(image.data[3:7, 10:20].compute()).all()
        assert np.isnan(expected[3:7, 10:20]).all()
    _assert_blocks_close_to_astropy(image, path)


def test_fits_first_image_hdu_and_extname(tmp_path):
    a = RNG.normal(size=(40, 50)).astype("f4")
    b = RNG.normal(size=(40, 50)).astype("f8")
    cube = np.zeros((3, 40, 50), "f4")
    table = fits.BinTableHDU.from_columns(
        [fits.Column(name="flux", format="E", array=np.ones(3))]
    )
    table.name = "CAT"
    path = tmp_path / "multi.fits"
    fits.HDUList(
        [
            fits.PrimaryHDU(),
            table,
            fits.ImageHDU(cube, name="CUBE"),
            fits.ImageHDU(a, name="SCI"),
            fits.ImageHDU(b, name="ERR"),
        ]
    ).writeto(path)
    image = open_image(path)
    assert image.identity["hdu"] == 3 and image.identity["extname"] == "SCI"
    np.testing.assert_array_equal(image.data.compute(), a)
    image = open_image(path, hdu="err")
    assert image.identity["hdu"] == 4 and image.data.dtype == np.float64
    np.testing.assert_array_equal(image.data.compute(), b)
    np.testing.assert_array_equal(open_image(path, hdu=-1).data.compute(), b)
    with pytest.raises(
        InputError,
        match=(
            r"^hdu='CAT' of .* is a BinTableHDU, not an"
            r" image; choose an image HDU with hdu="
        ),
    ):
        open_image(path, hdu="CAT")
    with pytest.raises(
        InputError, match=r"^hdu=0 of .* has no image data \(NAXIS = 0\)"
    ):
        open_image(path, hdu=0)
    with pytest.raises(
        InputError,
        match=(
            r"^hdu=9 not found in .*available HDUs: 0"
            r" 'PRIMARY' no data, 1 'CAT' BinTableHDU"
        ),
    ):
        open_image(path, hdu=9)
    with pytest.raises(
        InputError,
        match=r"^HDU 2 \('CUBE'\) of .* has shape \(3, 40, 50\) \(3-D\); .*hdu=",
    ):
        open_image(path, hdu="CUBE")


def test_fits_gz_and_fz_match_astropy(tmp_path):
    values = RNG.normal(size=(100, 130)).astype("f4")
    ints = RNG.integers(-1000, 1000, size=(100, 130)).astype("i2")
    plain = tmp_path / "img.fits"
    fits.PrimaryHDU(values, header=_tan_header(values.shape)).writeto(plain)
    gz = tmp_path / "img.fits.gz"
    with open(plain, "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    fz_float = tmp_path / "float.fits.fz"
    # GZIP_2 with quantize_level=0 stores floats losslessly (no quantization)
    fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.CompImageHDU(
                values,
                compression_type="GZIP_2",
                quantize_level=0.0,
                tile_shape=(16, 130),
            ),
        ]
    ).writeto(fz_float)
    fz_int = tmp_path / "int.fits.fz"
    fits.HDUList(
        [fits.PrimaryHDU(), fits.CompImageHDU(ints, compression_type="RICE_1")]
    ).writeto(fz_int)

    image = open_image(gz, chunks=24, box_size=6)
    _assert_blocks_close_to_astropy(image, gz)
    np.testing.assert_array_equal(image.data.compute(), values)
    assert fits.Header.fromstring(image.header)["CTYPE2"] == "DEC--TAN"
    image = open_image(fz_float, chunks=24, box_size=6)
    assert image.identity["hdu"] == 1 and image.data.dtype == np.float32
    _assert_blocks_close_to_astropy(image, fz_float, ext=1)
    np.testing.assert_array_equal(image.data.compute(), values)
    image = open_image(fz_int, chunks=24, box_size=6)
    _assert_blocks_close_to_astropy(image, fz_int, ext=1)
    np.testing.assert_array_equal(image.data.compute(), ints.astype("f4"))


class _Spy:
    def __init__(self, monkeypatch, owner, name):
        self.calls = []
        original = getattr(owner, name)

        def spy(*args, **kwargs):
            self.calls.append((args, kwargs))
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, spy)


def test_fits_tasks_read_only_their_section(tmp_path, monkeypatch):
    values = RNG.normal(size=(200, 300)).astype(">f4")
    plain = tmp_path / "img.fits"
    fits.PrimaryHDU(values).writeto(plain)
    image = open_image(plain, chunks=50, box_size=10)
    assert image.data.numblocks == (4, 6)
    assert len(image.data.__dask_graph__()) == 24
    spy = _Spy(monkeypatch, fits_image.Section, "__getitem__")
    block = image.data.blocks[2, 3].compute(scheduler="sync")
    np.testing.assert_array_equal(block, values[100:150, 150:200])
    # one contiguous read of the chunk's rows
    assert [args[1] for args, _ in spy.calls] == [(slice(100, 150), slice(None))]

    # tile-compressed: only the tiles under the chunk are decompressed
    fz = tmp_path / "img.fits.fz"
    fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.CompImageHDU(
                values.astype("f4"),
                compression_type="GZIP_1",
                quantize_level=0.0,
                tile_shape=(10, 300),
            ),
        ]
    ).writeto(fz)
    image = open_image(fz, chunks=50, box_size=10)
    tiles = _Spy(monkeypatch, fits_comp_section, "decompress_image_data_section")
    block = image.data.blocks[1, 0].compute(scheduler="sync")
    np.testing.assert_array_equal(block, values[50:100, 0:50])
    assert len(tiles.calls) == 1
    first, last = tiles.calls[0][0][5], tiles.calls[0][0][6]
    assert list(first) == [5, 0] and list(last) == [9, 0]

    # gzip: whole-row bands within the chunk's rows, never the whole image
    gz = tmp_path / "img.fits.gz"
    with open(plain, "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    # a band holds at most _BAND_BYTES: 20 rows of 300 float32 here
    monkeypatch.setattr(tilesky.io._fits, "_BAND_BYTES", 20 * 300 * 4)
    image = open_image(gz, chunks=50, box_size=10)
    spy.calls.clear()
    block = image.data.blocks[3, 5].compute(scheduler="sync")
    np.testing.assert_array_equal(block, values[150:200, 250:300])
    keys = [args[1] for args, _ in spy.calls]
    assert keys == [
        (slice(a, b), slice(None)) for a, b in ((150, 170), (170, 190), (190, 200))
    ]


def test_gzip_task_memory_is_bounded_by_its_rows(tmp_path):
    values = RNG.normal(size=(600, 2000)).astype("f4")
    plain = tmp_path / "img.fits"
    fits.PrimaryHDU(values).writeto(plain)
    gz = tmp_path / "img.fits.gz"
    with open(plain, "rb") as src, gzip.open(gz, "wb", compresslevel=1) as dst:
        shutil.copyfileobj(src, dst)
    image = open_image(gz, chunks=(60, 100))
    # a first compute pays for dask's lazy imports, which tracemalloc would count
    image.data.blocks[0, 0].compute(scheduler="sync")
    task = image.data.blocks[8, 17]
    tracemalloc.start()
    try:
        block = task.compute(scheduler="sync")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(block, values[480:540, 1700:1800])
    # one band of 60 full rows is 480 kB; the image is 4.8 MB
    assert peak < values.nbytes / 3, peak


def _to_memory(path, name):
    url = f"memory://{uuid.uuid4().hex}/{name}"
    import fsspec

    with fsspec.open(url, "wb") as f, open(path, "rb") as src:
        f.write(src.read())
    return url


def test_fits_over_fsspec_url(tmp_path):
    values = RNG.normal(size=(70, 90)).astype(">f4")
    plain = tmp_path / "img.fits"
    fits.PrimaryHDU(values, header=_tan_header(values.shape)).writeto(plain)
    gz = tmp_path / "img.fits.gz"
    with open(plain, "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    fz = tmp_path / "img.fits.fz"
    fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.CompImageHDU(
                values.astype("f4"),
                header=_tan_header(values.shape),
                compression_type="GZIP_2",
                quantize_level=0.0,
            ),
        ]
    ).writeto(fz)
    for path, ext in ((plain, None), (gz, None), (fz, 1)):
        url = _to_memory(path, path.name)
        image = open_image(url, chunks=(20, 30), box_size=(5, 15))
        assert image.identity["source"] == url
        _check_chunks(image.data, (20, 30))
        _assert_blocks_close_to_astropy(image, path, ext=ext)
        assert fits.Header.fromstring(image.header)["CTYPE1"] == "RA---TAN"
    image = open_image(f"file://{plain}", chunks=32)
    assert image.identity["source"] == str(plain)
    np.testing.assert_array_equal(image.data.compute(), values)


# --------------------------------------------------------------------------
# bad inputs: one line each, naming the problem and the fix


def _one_line(excinfo):
    text = str(excinfo.value)
    assert "\n" not in text and text.strip() == text
    return text


def test_bad_arrays(tmp_path):
    cases = [
        (
            np.zeros((3, 20, 20)),
            (
                r"^the numpy array has shape \(3, 20, 20\) \(3-D\);"
                r" .*select a plane, e\.g\. cube\[0\]"
            ),
        ),
        (np.zeros(20), r"has shape \(20,\) \(1-D\)"),
        (
            np.array([["a", "b"], ["c", "d"]]),
            r"has non-numeric dtype <U1; pass an image of integer or floating",
        ),
        (np.empty((4, 4), dtype=object), r"non-numeric dtype object"),
        (np.zeros((4, 4), dtype=bool), r"has boolean dtype; .*a mask is not an image"),
        (np.zeros((4, 4), dtype=complex), r"has complex dtype complex128; .*real part"),
        (da.zeros((4, 4), dtype="c8"), r"^the dask array has complex dtype complex64"),
        (
            np.zeros((8, 30)),
            (
                r"has shape \(8, 30\), smaller than box_size"
                r" \(10, 10\); use a box_size no larger"
            ),
        ),
        (
            xr.DataArray(np.zeros((2, 5, 5)), dims=("t", "y", "x")),
            r"dims \('t', 'y', 'x'\) .*\.isel\(t=0\)",
        ),
        (
            [[1.0, 2.0]],
            r"^cannot use an input of type list; pass a numpy, dask or xarray array",
        ),
    ]
    for source, pattern in cases:
        with pytest.raises(InputError, match=pattern) as excinfo:
            open_image(source, box_size=10 if "box_size" in pattern else 1)
        _one_line(excinfo)
    with pytest.raises(
        InputError, match=r"^hdu=0 does not apply to a numpy array input"
    ):
        open_image(np.zeros((4, 4)), hdu=0)
    with pytest.raises(InputError, match=r"^chunks=0 is not valid"):
        open_image(np.zeros((4, 4)), chunks=0)


@pytest.mark.filterwarnings("ignore::astropy.utils.exceptions.AstropyUserWarning")
@pytest.mark.filterwarnings("ignore::astropy.io.fits.verify.VerifyWarning")
def test_bad_files(tmp_path):
    with pytest.raises(
        InputError,
        match=r"^cannot open input '.*missing\.fits': no such file or directory$",
    ):
        open_image(tmp_path / "missing.fits")
    junk = tmp_path / "notes.txt"
    junk.write_text("hello")
    with pytest.raises(InputError, match=r"neither a FITS file nor a Zarr store"):
        open_image(junk)
    bad = tmp_path / "bad.fits"
    bad.write_bytes(b"x" * 5000)
    with pytest.raises(
        InputError,
        match=(
            r"^cannot open input '.*bad\.fits' as FITS:"
            r" OSError: .*valid, complete FITS file\?$"
        ),
    ):
        open_image(bad)

    values = np.arange(100 * 120, dtype=">f4").reshape(100, 120)
    good = tmp_path / "good.fits"
    fits.PrimaryHDU(values).writeto(good)
    raw = good.read_bytes()
    cut = tmp_path / "cut.fits"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(
        InputError,
        match=(
            r"^'.*cut\.fits' is truncated: HDU 0 .*needs"
            r" 50880 bytes but the file has 25920"
        ),
    ):
        open_image(cut)
    header_only = tmp_path / "header.fits"
    header_only.write_bytes(raw[:1000])
    with pytest.raises(
        InputError, match=r"as FITS: OSError: Empty or corrupt FITS file"
    ):
        open_image(header_only)
    # astropy's open seeks past the HDU's data, so a cut gzip stream fails at open
    noisy = tmp_path / "noisy.fits"
    fits.PrimaryHDU(RNG.normal(size=(100, 120)).astype("f4")).writeto(noisy)
    packed = gzip.compress(noisy.read_bytes())
    cutgz = tmp_path / "cut.fits.gz"
    cutgz.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(
        InputError,
        match=(
            r"^cannot open input '.*cut\.fits\.gz'"
            r" as FITS: OSError: Empty or corrupt"
        ),
    ):
        open_image(cutgz)
    # a file cut after the graph was built fails in the task that reads it
    image = open_image(noisy, chunks=50)
    noisy.write_bytes(noisy.read_bytes()[:20000])
    with pytest.raises(
        InputError,
        match=(
            r"^cannot read rows 50:100, columns 0:50 of '.*noisy\.fits'"
            r" \(HDU 0\): .*truncated or corrupt$"
        ),
    ):
        image.data.blocks[1, 0].compute(scheduler="sync")

    strings = tmp_path / "table_only.fits"
    fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.BinTableHDU.from_columns(
                [fits.Column(name="a", format="E", array=np.ones(2))]
            ),
        ]
    ).writeto(strings)
    with pytest.raises(
        InputError,
        match=r"holds no image data \(HDUs: 0 'PRIMARY' no data, 1 '' BinTableHDU\)",
    ):
        open_image(strings)
    cube = tmp_path / "cube.fits"
    fits.PrimaryHDU(np.zeros((2, 20, 20), "f4")).writeto(cube)
    with pytest.raises(
        InputError,
        match=r"no 2-D image HDU; HDU 0 \('PRIMARY'\) has shape \(2, 20, 20\): .*hdu=",
    ):
        open_image(cube)
    small = tmp_path / "small.fits"
    fits.PrimaryHDU(np.zeros((20, 20), "f4")).writeto(small)
    with pytest.raises(
        InputError, match=r"shape \(20, 20\), smaller than box_size \(32, 32\)"
    ):
        open_image(small, box_size=32)
    with pytest.raises(
        InputError, match=r"^variable='scene' does not apply to a FITS input"
    ):
        open_image(small, variable="scene")


def test_bad_zarr(tmp_path):
    g = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    g.create_array("cube", shape=(3, 20, 20), dtype="f4")
    g.create_array("flags", shape=(20, 20), dtype="bool")
    g.create_array("names", shape=(20, 20), dtype=str)
    with pytest.raises(
        InputError,
        match=(
            r"Zarr array 'cube' of .* has shape \(3, 20, 20\)"
            r" \(3-D\); .*choose a 2-D array with variable="
        ),
    ):
        open_image(tmp_path / "g.zarr", variable="cube")
    with pytest.raises(InputError, match=r"Zarr array 'flags' .* boolean dtype"):
        open_image(tmp_path / "g.zarr", variable="flags")
    with pytest.raises(InputError, match=r"Zarr array 'names' .* non-numeric dtype"):
        open_image(tmp_path / "g.zarr", variable="names")
    with pytest.raises(InputError, match=r"^hdu=1 does not apply to a Zarr input"):
        open_image(tmp_path / "g.zarr", hdu=1)

    corrupt = tmp_path / "corrupt.zarr"
    _write_group(str(corrupt))
    (corrupt / "zarr.json").write_text("{not json")
    with pytest.raises(
        InputError,
        match=r"^cannot open input '.*corrupt\.zarr' as Zarr: .*is it a Zarr store\?$",
    ):
        open_image(corrupt)
    empty = tmp_path / "empty.zarr"
    empty.mkdir()
    with pytest.raises(InputError, match=r"^cannot open input '.*empty\.zarr' as Zarr"):
        open_image(empty)

    broken = tmp_path / "broken.zarr"
    _write_group(str(broken))
    (broken / "scene" / "c" / "1" / "0").write_bytes(b"garbage bytes")
    image = open_image(broken, box_size=5)
    with pytest.raises(
        InputError,
        match=(
            r"^cannot read rows 20:40, columns 0:25 of Zarr"
            r" array 'scene' .*store may be corrupt$"
        ),
    ):
        image.data.blocks[1, 0].compute(scheduler="sync")


# --------------------------------------------------------------------------
# S3 through a moto server on loopback


@pytest.fixture(scope="module")
def s3_endpoint():
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.moto_server.threaded_moto_server")
    server = moto_server.ThreadedMotoServer(
        ip_address="127.0.0.1", port=0, verbose=False
    )
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def test_s3_zarr_and_fits(s3_endpoint, tmp_path, monkeypatch):
    import s3fs

    bucket = f"tilesky-{uuid.uuid4().hex[:12]}"
    options = {"endpoint_url": s3_endpoint, "key": "testing", "secret": "s3cr3t-value"}
    fs = s3fs.S3FileSystem(**options)
    fs.mkdir(bucket)
    scene = _write_group(
        zarr.storage.FsspecStore.from_url(
            f"s3://{bucket}/scene.zarr", storage_options=options
        )
    )
    image = open_image(f"s3://{bucket}/scene.zarr", storage_options=options, box_size=5)
    _check_chunks(image.data, (20, 25))
    np.testing.assert_array_equal(image.data.compute(), scene)
    assert image.identity["source"] == f"s3://{bucket}/scene.zarr"
    assert "s3cr3t" not in json.dumps(image.identity)

    values = RNG.normal(size=(40, 60)).astype(">f4")
    local = tmp_path / "img.fits"
    fits.PrimaryHDU(values).writeto(local)
    fs.put(str(local), f"{bucket}/img.fits")
    image = open_image(f"s3://{bucket}/img.fits", storage_options=options, chunks=16)
    np.testing.assert_array_equal(image.data.compute(), values)
    assert image.identity["fingerprint"]["etag"]

    # s3fs/botocore read the endpoint from the environment themselves
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    image = open_image(
        f"s3://{bucket}/scene.zarr", storage_options={"skip_instance_cache": True}
    )
    np.testing.assert_array_equal(image.data.compute(), scene)

    with pytest.raises(
        InputError,
        match=(
            r"^cannot open input 's3://nope-no-bucket/x\.zarr': bucket"
            r" 'nope-no-bucket' does not exist or is not accessible"
        ),
    ):
        open_image("s3://nope-no-bucket/x.zarr", storage_options=options)
    with pytest.raises(
        InputError,
        match=(
            rf"^cannot open input 's3://{bucket}/missing\.zarr':"
            r" no such file or directory$"
        ),
    ):
        open_image(f"s3://{bucket}/missing.zarr", storage_options=options)
    with pytest.raises(InputError) as excinfo:
        open_image(
            f"s3://AKIA:{options['secret']}@{bucket}/missing.zarr",
            storage_options=options,
        )
    assert options["secret"] not in str(excinfo.value)
    cause = excinfo.value.__cause__
    assert cause is None or options["secret"] not in str(cause)


def test_unreachable_endpoint():
    pytest.importorskip("s3fs")
    # port 9 (discard) is closed on loopback; one attempt, short timeout
    options = {
        "endpoint_url": "http://127.0.0.1:9",
        "key": "k",
        "secret": "s",
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1},
    }
    with pytest.raises(
        InputError,
        match=(
            r"^cannot open input 's3://bkt/x\.zarr': EndpointConnectionError:"
            r" Could not connect"
        ),
    ):
        open_image("s3://bkt/x.zarr", storage_options=options)
    with pytest.raises(
        InputError,
        match=(
            r"^cannot open input 'http://127\.0\.0\.1:9/x\.fits':"
            r" ClientConnectorError"
        ),
    ):
        open_image("http://127.0.0.1:9/x.fits")


def test_outputs_are_blosc_lz4_shuffled_and_checkpoints_raw(tmp_path):
    # Outputs: the codec measured fastest for their size (chunk_codecs);
    # checkpoints (read back once, then deleted) stay uncompressed.
    import zarr

    from tilesky.store import WORK, RunStore

    store = RunStore(str(tmp_path / "run.zarr"))
    store.create(overwrite=False, resume=False, attrs={})
    image = da.from_array(np.arange(120.0 * 90).reshape(120, 90).astype(np.float32))
    items = [("background", image, ("y", "x"), None)]
    store.write_arrays(items)
    store.checkpoint("first_background", image)
    store.drain()
    group = zarr.open_group(str(tmp_path / "run.zarr"), mode="r")
    codec = group["background"].compressors[0]
    assert (codec.cname.value, codec.shuffle.value) == ("lz4", "shuffle")
    np.testing.assert_array_equal(group["background"][...], image.compute())
    # The checkpoint's only byte codec is its checksum.
    codecs = [
        c.to_dict()["name"] for c in group[f"{WORK}/first_background"].compressors
    ]
    assert codecs == ["crc32c"]
