"""IDW and spline mesh kernels: photutils parity and tiled == monolithic."""

import warnings

import numpy as np
import pytest
from _reference_kernels import idw_grid_reference
from astropy.utils.exceptions import AstropyDeprecationWarning
from numpy.testing import assert_allclose, assert_array_equal
from photutils.background import Background2D, BkgIDWInterpolator, MedianBackground
from scipy.spatial import cKDTree

from tilesky.config import MeshConfig
from tilesky.kernels import _idw
from tilesky.kernels._idw import fill_depth, fill_mesh_nans, idw_depth, idw_interpolate
from tilesky.kernels._mesh_window import mesh_window
from tilesky.kernels._spline import _spline_float64, spline_depth, spline_interpolate

# photutils' IDW parameters (BkgIDWInterpolator, Background2D._interpolate_grid
# defaults), the parity tests' reference; the reach is the config's, in boxes.
PHOTUTILS_IDW = {"n_neighbors": 10, "power": 1.0, "regularization": 0.0}
REACH_BOXES = MeshConfig().max_distance


def _mesh_shape(shape, box):
    return tuple(-(-n // b) for n, b in zip(shape, box, strict=True))


def _random_mesh(mesh_shape, *, nan_fraction=0.0, hole=None, seed=0):
    """Smooth gradient plus noise; NaN at random cells and in a disk ``hole``."""
    rng = np.random.default_rng(seed)
    y, x = np.indices(mesh_shape)
    mesh = 100.0 + 0.3 * y - 0.2 * x + rng.normal(size=mesh_shape)
    mesh[rng.random(mesh_shape) < nan_fraction] = np.nan
    if hole is not None:
        (cy, cx), radius = hole
        mesh[(y - cy) ** 2 + (x - cx) ** 2 <= radius**2] = np.nan
    return mesh


def _background2d(mesh, box, shape, interpolator=None):
    """photutils Background2D whose box statistics are exactly ``mesh``.

    Boxes are constant (the median is then exact) and NaN cells fully masked
    (always excluded); no filtering, so the mesh reaches the interpolator as is.
    """
    expand = np.ones(box)
    data = np.kron(np.nan_to_num(mesh), expand)[: shape[0], : shape[1]]
    mask = np.kron(np.isnan(mesh), expand)[: shape[0], : shape[1]].astype(bool)
    kwargs = {} if interpolator is None else {"interpolator": interpolator}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyDeprecationWarning)
        bkg = Background2D(
            data,
            box,
            mask=mask,
            filter_size=(1, 1),
            sigma_clip=None,
            bkg_estimator=MedianBackground(),
            exclude_percentile=100,
            **kwargs,
        )
    assert_array_equal(bkg._bkg_stats, mesh)
    return bkg


def _centres(cells, box):
    return cells * np.asarray(box) + (np.asarray(box) - 1) / 2.0


def _kth_distances(query, points, k):
    """Distances to the k-th and (k+1)-th nearest points, unbounded search."""
    d, _ = cKDTree(points).query(query, k=k + 1)
    return d[:, k - 1], d[:, k]


def _oracle(query, points, values, *, k, power, reg, max_distance):
    """Brute-force bounded, tie-inclusive IDW (the definition, in float64)."""
    out = np.full(len(query), np.nan)
    for start in range(0, len(query), 1024):
        q = query[start : start + 1024]
        d = np.sqrt(((q[:, None, :] - points[None, :, :]) ** 2).sum(-1))
        reach = d <= max_distance
        count = reach.sum(1)
        ranked = np.sort(np.where(reach, d, np.inf), axis=1)
        kth = ranked[np.arange(len(q)), np.clip(np.minimum(count, k) - 1, 0, None)]
        use = reach & (d <= kth[:, None])
        with np.errstate(divide="ignore", invalid="ignore"):
            w = np.where(use, 1.0 / (d**power + reg), 0.0)
            res = (w * values).sum(1) / w.sum(1)
        on_centre = d.min(1) == 0.0
        res[on_centre] = values[d.argmin(1)[on_centre]]
        res[count == 0] = np.nan
        out[start : start + len(q)] = res
    return out


def _pixels(shape):
    return np.indices(shape).reshape(2, -1).T.astype(float)


def _tiles(shape, tile):
    for y in range(0, shape[0], tile[0]):
        for x in range(0, shape[1], tile[1]):
            yield (y, x), (min(tile[0], shape[0] - y), min(tile[1], shape[1] - x))


def _run_tiled(shape, tile, box, depth, mesh, kernel, **kwargs):
    """Run ``kernel`` tile by tile, each on its mesh block with halo ``depth``."""
    out = np.full(shape, np.nan, dtype=np.float64)
    for offset, tshape in _tiles(shape, tile):
        win = mesh_window(
            offset, tshape, box_size=box, depth=depth, mesh_shape=mesh.shape
        )
        block = kernel(
            mesh[win],
            box_size=box,
            out_shape=tshape,
            out_offset=offset,
            mesh_offset=(win[0].start, win[1].start),
            **kwargs,
        )
        out[offset[0] : offset[0] + tshape[0], offset[1] : offset[1] + tshape[1]] = (
            block
        )
    return out.astype(block.dtype)


def _spline64(
    mesh,
    *,
    box_size,
    out_shape,
    out_offset=(0, 0),
    mesh_offset=(0, 0),
    mesh_global_shape,
):
    """The unclipped float64 spline behind spline_interpolate."""
    return _spline_float64(
        mesh, box_size, out_shape, out_offset, mesh_offset, mesh_global_shape
    )


# ----------------------------------------------------------------------------
# fill_mesh_nans


@pytest.mark.parametrize("max_distance", [16.0, 2.5])
def test_fill_matches_photutils_without_ties(max_distance):
    mesh = _random_mesh((40, 50), nan_fraction=0.3, hole=((20, 25), 5))
    ours = fill_mesh_nans(mesh, **PHOTUTILS_IDW, max_distance=max_distance)
    ref = _background2d(mesh, (4, 4), (160, 200))._interpolate_grid(mesh)

    nan = np.isnan(mesh)
    assert_array_equal(ours[~nan], mesh[~nan])
    query, points = np.argwhere(nan), np.argwhere(~nan)
    dk, dk1 = _kth_distances(query, points, 10)
    comparable = (dk < dk1) & (dk <= max_distance)
    assert comparable.sum() > 50
    assert_allclose(ours[nan][comparable], ref[nan][comparable], rtol=1e-12)
    # Ties and a short reach are the only places where the definitions differ.
    differ = ~np.isclose(ours[nan], ref[nan], rtol=1e-12, equal_nan=True)
    assert differ.any()
    assert not (differ & comparable).any()


def test_fill_matches_definition_everywhere():
    mesh = _random_mesh((30, 35), nan_fraction=0.4, hole=((10, 20), 6))
    for k, power, reg, max_distance in [(10, 1.0, 0.0, 4.0), (3, 2.0, 0.5, 7.0)]:
        ours = fill_mesh_nans(
            mesh,
            n_neighbors=k,
            power=power,
            regularization=reg,
            max_distance=max_distance,
        )
        nan = np.isnan(mesh)
        ref = _oracle(
            np.argwhere(nan).astype(float),
            np.argwhere(~nan).astype(float),
            mesh[~nan],
            k=k,
            power=power,
            reg=reg,
            max_distance=max_distance,
        )
        assert_allclose(ours[nan], ref, rtol=1e-12, equal_nan=True)


def test_fill_keeps_dtype_and_input():
    mesh = _random_mesh((12, 9), nan_fraction=0.3).astype(np.float32)
    before = mesh.copy()
    out = fill_mesh_nans(mesh, **PHOTUTILS_IDW, max_distance=REACH_BOXES)
    assert out.dtype == np.float32
    assert not np.isnan(out).any()
    assert_array_equal(mesh, before)


# ----------------------------------------------------------------------------
# idw_interpolate


@pytest.mark.parametrize(
    ("shape", "box", "power"),
    [((131, 97), (6, 6), 1.0), ((131, 97), (6, 6), 0.0), ((120, 110), (5, 7), 1.0)],
)
def test_idw_matches_photutils_without_ties(shape, box, power):
    mesh = _random_mesh(_mesh_shape(shape, box), nan_fraction=0.25)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyDeprecationWarning)
        interp = BkgIDWInterpolator(n_neighbors=20, power=power, regularization=30)
    ref = _background2d(mesh, box, shape, interp).background
    ours = idw_interpolate(
        mesh,
        box_size=box,
        out_shape=shape,
        n_neighbors=20,
        power=power,
        regularization=30,
        max_distance=REACH_BOXES * max(box),
    )
    assert ours.dtype == np.float32
    assert ours.shape == shape

    points = _centres(np.argwhere(~np.isnan(mesh)), box)
    dk, dk1 = _kth_distances(_pixels(shape), points, 20)
    comparable = ((dk < dk1) & (dk <= REACH_BOXES * max(box))).reshape(shape)
    assert comparable.mean() > 0.5
    assert_allclose(ours[comparable], ref[comparable], rtol=1e-6)


@pytest.mark.parametrize(
    ("box", "k", "power", "reg", "max_distance"),
    [
        ((6, 6), 20, 1.0, 30.0, 20.0),
        ((5, 3), 4, 2.0, 0.0, 9.0),
        ((3, 3), 1, 1.0, 0.0, 5.0),
    ],
)
def test_idw_matches_definition_everywhere(box, k, power, reg, max_distance):
    shape = (61, 47)
    mesh = _random_mesh(_mesh_shape(shape, box), nan_fraction=0.3, hole=((5, 6), 3))
    ours = idw_interpolate(
        mesh,
        box_size=box,
        out_shape=shape,
        n_neighbors=k,
        power=power,
        regularization=reg,
        max_distance=max_distance,
    )
    valid = ~np.isnan(mesh)
    ref = _oracle(
        _pixels(shape),
        _centres(np.argwhere(valid), box),
        mesh[valid],
        k=k,
        power=power,
        reg=reg,
        max_distance=max_distance,
    ).reshape(shape)
    assert_allclose(ours, ref, rtol=1e-6, equal_nan=True)


def test_idw_on_mesh_centres_and_constant_mesh():
    box = (5, 3)  # odd: pixels on the mesh centres exist
    mesh = _random_mesh((8, 9), nan_fraction=0.2)
    idw = {**PHOTUTILS_IDW, "max_distance": REACH_BOXES * max(box)}
    out = idw_interpolate(mesh, box_size=box, out_shape=(40, 27), **idw)
    valid = ~np.isnan(mesh)
    assert_array_equal(out[2::5, 1::3][valid], mesh[valid].astype(np.float32))

    const = np.where(valid, 7.3, np.nan)
    idw["n_neighbors"] = 20
    out = idw_interpolate(const, box_size=box, out_shape=(40, 27), **idw)
    assert_array_equal(out, np.float32(7.3))


# ----------------------------------------------------------------------------
# spline_interpolate


@pytest.mark.parametrize(
    ("shape", "box"),
    [
        ((131, 97), (6, 6)),
        ((100, 90), (5, 7)),
        ((13, 11), (6, 6)),
        ((251, 197), (3, 2)),
    ],
)
def test_spline_matches_photutils_zoom(shape, box):
    mesh = _random_mesh(_mesh_shape(shape, box))
    ref = _background2d(mesh, box, shape).background
    ours = spline_interpolate(
        mesh,
        box_size=box,
        out_shape=shape,
        mesh_global_shape=mesh.shape,
        clip_range=(mesh.min(), mesh.max()),
    )
    assert ours.dtype == np.float32
    assert_allclose(ours, ref, rtol=1e-6)


def test_spline_constant_mesh_is_exact():
    mesh = np.full((9, 8), 3.1)
    out = spline_interpolate(
        mesh,
        box_size=4,
        out_shape=(35, 30),
        mesh_global_shape=mesh.shape,
        clip_range=(3.1, 3.1),
    )
    assert_array_equal(out, np.float32(3.1))


# ----------------------------------------------------------------------------
# tiled == monolithic


TILES = [(7, 5), (30, 24), (50, 41), (1000, 1000)]


@pytest.mark.parametrize(
    ("shape", "box", "max_distance"),
    [((131, 97), (6, 6), 96.0), ((131, 97), (6, 6), 20.0), ((203, 151), (5, 3), 14.0)],
)
def test_idw_tiled_equals_monolithic(shape, box, max_distance):
    mshape = _mesh_shape(shape, box)
    mesh = _random_mesh(mshape, nan_fraction=0.3, hole=((10, 8), 4))
    kwargs = {
        "n_neighbors": 20,
        "power": 1.0,
        "regularization": 30.0,
        "max_distance": max_distance,
    }
    mono = idw_interpolate(mesh, box_size=box, out_shape=shape, **kwargs)
    depth = idw_depth(max_distance, box)
    for tile in TILES:
        tiled = _run_tiled(shape, tile, box, depth, mesh, idw_interpolate, **kwargs)
        assert_array_equal(tiled, mono)


@pytest.mark.parametrize("max_distance", [16.0, 3.5])
def test_fill_tiled_equals_monolithic(max_distance):
    mesh = _random_mesh((41, 37), nan_fraction=0.4, hole=((20, 15), 6))
    mono = fill_mesh_nans(mesh, **PHOTUTILS_IDW, max_distance=max_distance)
    depth = fill_depth(max_distance)
    for tile in [(1, 1), (3, 4), (7, 11), (100, 100)]:
        tiled = np.full(mesh.shape, -1.0)
        for (y, x), (ty, tx) in _tiles(mesh.shape, tile):
            win = mesh_window(
                (y, x), (ty, tx), box_size=1, depth=depth, mesh_shape=mesh.shape
            )
            block = fill_mesh_nans(
                mesh[win], **PHOTUTILS_IDW, max_distance=max_distance
            )
            oy, ox = y - win[0].start, x - win[1].start
            tiled[y : y + ty, x : x + tx] = block[oy : oy + ty, ox : ox + tx]
        assert_array_equal(tiled, mono)


@pytest.mark.parametrize(("shape", "box"), [((131, 97), (6, 6)), ((251, 197), (3, 2))])
def test_spline_tiled_equals_monolithic(shape, box):
    mshape = _mesh_shape(shape, box)
    mesh = _random_mesh(mshape)
    clip = (mesh.min(), mesh.max())
    kwargs = {"mesh_global_shape": mshape}
    mono = spline_interpolate(
        mesh, box_size=box, out_shape=shape, clip_range=clip, **kwargs
    )
    mono64 = _spline64(mesh, box_size=box, out_shape=shape, **kwargs)
    depth = spline_depth()
    for tile in TILES:
        tiled = _run_tiled(
            shape, tile, box, depth, mesh, spline_interpolate, clip_range=clip, **kwargs
        )
        assert_allclose(tiled, mono, rtol=1e-6)
        # The halo's truncation error, before float32 rounding hides it.
        tiled64 = _run_tiled(shape, tile, box, depth, mesh, _spline64, **kwargs)
        assert np.abs(tiled64 - mono64).max() < 1e-12 * np.ptp(mesh)


# ----------------------------------------------------------------------------
# holes bigger than the reach


def test_large_holes_nan_only_out_of_reach():
    box, shape = (4, 4), (240, 236)
    mshape = _mesh_shape(shape, box)
    mesh = _random_mesh(mshape, nan_fraction=0.1, hole=((30, 30), 15))
    mesh[:, 50:] = np.nan  # a band wider than the reach at the edge
    valid = ~np.isnan(mesh)

    max_px = 8.0 * 4
    out = idw_interpolate(
        mesh,
        box_size=box,
        out_shape=shape,
        n_neighbors=20,
        power=1.0,
        regularization=0.0,
        max_distance=max_px,
    )
    nearest, _ = cKDTree(_centres(np.argwhere(valid), box)).query(_pixels(shape))
    out_of_reach = (nearest > max_px).reshape(shape)
    assert out_of_reach.any() and not out_of_reach.all()
    assert_array_equal(np.isnan(out), out_of_reach)

    max_cells = 8.0
    filled = fill_mesh_nans(mesh, **PHOTUTILS_IDW, max_distance=max_cells)
    nearest, _ = cKDTree(np.argwhere(valid)).query(np.argwhere(np.ones(mshape)))
    out_of_reach = (nearest > max_cells).reshape(mshape)
    assert out_of_reach.any()
    assert_array_equal(np.isnan(filled), out_of_reach)


# ----------------------------------------------------------------------------
# depths and errors


def test_depths():
    assert fill_depth(16.0) == 16
    assert idw_depth(96.0, 6) == 16
    assert idw_depth(96, (6, 6)) == 16
    assert idw_depth(20.0, (5, 3)) == 7
    assert spline_depth() == 26


def test_errors():
    mesh = _random_mesh((10, 10))
    idw = {**PHOTUTILS_IDW, "max_distance": 64.0}
    with pytest.raises(ValueError, match="n_neighbors"):
        fill_mesh_nans(mesh, **{**idw, "n_neighbors": 0})
    with pytest.raises(ValueError, match="max_distance"):
        fill_mesh_nans(mesh, **{**idw, "max_distance": np.inf})
    with pytest.raises(ValueError, match="regularization"):
        idw_interpolate(
            mesh, box_size=4, out_shape=(8, 8), **{**idw, "regularization": -1}
        )
    with pytest.raises(ValueError, match="box_size"):
        idw_interpolate(mesh, box_size=(4, 0), out_shape=(8, 8), **idw)
    with pytest.raises(ValueError, match="mesh_window"):
        idw_interpolate(
            mesh[2:], box_size=4, out_shape=(8, 8), mesh_offset=(2, 0), **idw
        )
    with pytest.raises(ValueError, match="spline halo"):
        big = _random_mesh((80, 80))
        spline_interpolate(
            big[30:40, 30:40],
            box_size=2,
            out_shape=(4, 4),
            out_offset=(70, 70),
            mesh_offset=(30, 30),
            mesh_global_shape=big.shape,
        )
    with pytest.raises(ValueError, match="fill_mesh_nans"):
        spline_interpolate(
            np.where(mesh > 101, np.nan, mesh),
            box_size=2,
            out_shape=(20, 20),
            mesh_global_shape=mesh.shape,
        )


# ----------------------------------------------------------------------------
# fast kernel == per-pixel reference, bit for bit


def _with_reference_kernel(monkeypatch):
    """Route idw_interpolate / fill_mesh_nans through the reference kernel."""
    monkeypatch.setattr(_idw, "idw_grid", idw_grid_reference)


def _both(monkeypatch, func, *args, **kwargs):
    """``func`` with the fast kernel, then with the reference kernel."""
    fast = func(*args, **kwargs)
    with monkeypatch.context() as m:
        _with_reference_kernel(m)
        ref = func(*args, **kwargs)
    return fast, ref


def _assert_identical(fast, ref, case):
    assert fast.dtype == ref.dtype and fast.shape == ref.shape, case
    assert np.array_equal(fast, ref, equal_nan=True), case
    # Stricter: same bits, so -0.0 / +0.0 and NaN payloads agree too.
    bits = {4: np.uint32, 8: np.uint64}[fast.dtype.itemsize]
    assert np.array_equal(fast.view(bits), ref.view(bits)), case


def _hostile_mesh(rng, mshape):
    """Smooth, integer-valued (ties, signed zeros), constant or with infinities."""
    kind = rng.integers(4)
    y, x = np.indices(mshape)
    if kind == 0:
        mesh = 100.0 + 0.3 * y - 0.2 * x + rng.normal(size=mshape)
    elif kind == 1:
        mesh = rng.integers(-2, 3, size=mshape).astype(float)
        mesh[rng.random(mshape) < 0.3] = -0.0
    elif kind == 2:
        mesh = np.full(mshape, 3.7)
    else:
        mesh = 1e3 * rng.normal(size=mshape)
        mesh[rng.random(mshape) < 0.05] = np.inf
        mesh[rng.random(mshape) < 0.05] = -np.inf
    nan_fraction = rng.choice([0.0, 0.02, 0.3, 0.7, 0.95, 1.0])
    mesh[rng.random(mshape) < nan_fraction] = np.nan
    return mesh.astype(rng.choice([np.float32, np.float64]))


@pytest.mark.parametrize("seed", range(4))
def test_idw_fast_equals_reference_randomized(monkeypatch, seed):
    """Random boxes 1..12 (non-square too), tiles anywhere, any IDW parameters."""
    rng = np.random.default_rng(seed)
    for _ in range(150):
        box = tuple(int(b) for b in rng.integers(1, 13, 2))
        if rng.random() < 0.3:
            box = (box[0], box[0])
        shape = tuple(int(n) for n in rng.integers(1, 160, 2))
        mshape = _mesh_shape(shape, box)
        mesh = _hostile_mesh(rng, mshape)
        max_distance = float(
            rng.choice(
                [
                    rng.uniform(0.3, 3.0),  # shorter than a box
                    rng.uniform(1.0, 20.0) * max(box),
                    REACH_BOXES * max(box),  # the pipeline's reach
                ]
            )
        )
        # A tile anywhere: offsets not aligned to boxes, at the mesh edges.
        offset = tuple(int(rng.integers(0, n)) for n in shape)
        tshape = tuple(
            int(rng.integers(1, n - o + 1)) for n, o in zip(shape, offset, strict=True)
        )
        win = mesh_window(
            offset,
            tshape,
            box_size=box,
            depth=idw_depth(max_distance, box),
            mesh_shape=mshape,
        )
        kwargs = {
            "box_size": box,
            "out_shape": tshape,
            "out_offset": offset,
            "mesh_offset": (win[0].start, win[1].start),
            "n_neighbors": int(rng.integers(1, 31)),
            "power": float(rng.choice([0.0, 1.0, 2.0, 0.5])),
            "regularization": float(rng.choice([0.0, 30.0, 0.25])),
            "max_distance": max_distance,
        }
        fast, ref = _both(monkeypatch, idw_interpolate, mesh[win], **kwargs)
        _assert_identical(fast, ref, kwargs)


@pytest.mark.parametrize(
    ("box", "k", "power", "reg", "max_distance"),
    [
        ((10, 10), 20, 1.0, 30.0, 160.0),  # the pipeline's first pass
        ((6, 6), 20, 1.0, 30.0, 96.0),  # and its second
        ((5, 3), 7, 2.0, 0.0, 40.0),  # odd boxes: pixels on mesh centres
        ((1, 1), 30, 0.0, 0.0, 12.0),
        ((12, 7), 1, 1.0, 0.0, 200.0),
    ],
)
@pytest.mark.parametrize("nan_fraction", [0.0, 0.02, 0.3])
def test_idw_fast_equals_reference_pipeline_like(
    monkeypatch, box, k, power, reg, max_distance, nan_fraction
):
    """Smooth meshes with scattered NaN and a hole wider than the short table."""
    shape = (251, 243)
    mshape = _mesh_shape(shape, box)
    hole = ((mshape[0] // 3, mshape[1] // 2), max(2, min(mshape) // 6))
    mesh = _random_mesh(mshape, nan_fraction=nan_fraction, hole=hole, seed=7)
    kwargs = {
        "box_size": box,
        "n_neighbors": k,
        "power": power,
        "regularization": reg,
        "max_distance": max_distance,
    }
    fast, ref = _both(monkeypatch, idw_interpolate, mesh, out_shape=shape, **kwargs)
    _assert_identical(fast, ref, kwargs)
    # A tile not aligned to the boxes, touching the mesh's far corner.
    offset, tshape = (97, 61), (shape[0] - 97, shape[1] - 61)
    win = mesh_window(
        offset,
        tshape,
        box_size=box,
        depth=idw_depth(max_distance, box),
        mesh_shape=mshape,
    )
    tiled, _ = _both(
        monkeypatch,
        idw_interpolate,
        mesh[win],
        out_shape=tshape,
        out_offset=offset,
        mesh_offset=(win[0].start, win[1].start),
        **kwargs,
    )
    _assert_identical(tiled, fast[offset[0] :, offset[1] :], kwargs)


def test_idw_fast_equals_reference_mesh_smaller_than_reach(monkeypatch):
    mesh = np.array([[1.0, np.nan, 3.0], [np.nan, 2.0, -0.0]])
    for k in (1, 2, 4, 30):
        for box in [(1, 1), (4, 3), (7, 7)]:
            shape = (2 * box[0], 3 * box[1])
            kwargs = {
                "box_size": box,
                "n_neighbors": k,
                "power": 1.0,
                "regularization": 0.0,
                "max_distance": 50.0,
            }
            fast, ref = _both(
                monkeypatch, idw_interpolate, mesh, out_shape=shape, **kwargs
            )
            _assert_identical(fast, ref, kwargs)
            assert not np.isnan(fast).any()


@pytest.mark.parametrize("seed", range(3))
def test_fill_fast_equals_reference(monkeypatch, seed):
    """fill_mesh_nans' only_nan mode, sparse and dense NaN, any parameters."""
    rng = np.random.default_rng(100 + seed)
    for _ in range(40):
        mshape = tuple(int(n) for n in rng.integers(1, 60, 2))
        mesh = _hostile_mesh(rng, mshape)
        kwargs = {
            "n_neighbors": int(rng.integers(1, 31)),
            "power": float(rng.choice([0.0, 1.0, 2.0])),
            "regularization": float(rng.choice([0.0, 0.5])),
            "max_distance": float(rng.choice([1.5, 4.0, 16.0])),
        }
        fast, ref = _both(monkeypatch, fill_mesh_nans, mesh, **kwargs)
        _assert_identical(fast, ref, kwargs)
