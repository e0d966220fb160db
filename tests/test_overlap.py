"""tile_map: halos gathered from neighbouring blocks, or from their edge cuts."""

import dask.array as da
import numpy as np
import pytest
from scipy import ndimage

from tilesky.backends._tile_map import EDGE_CUT_FRACTION, TileInput, crop_to, tile_map


def _box_max(image, *, regions, out_region, size):
    # Reflected edges at the image border match scipy's whole-image rule,
    # because the region is clipped there.
    return crop_to(ndimage.maximum_filter(image, size=size), regions[0], out_region)


def _tiled_box_max(image: np.ndarray, chunks, size: int) -> da.Array:
    array = da.from_array(image, chunks=chunks)
    half = size // 2
    return tile_map(
        _box_max,
        [TileInput(array, depth=(half, half))],
        name="box-max",
        dtype=image.dtype,
        kwargs={"size": size},
    )


def _layer(result: da.Array) -> dict:
    return dict(result.__dask_graph__().layers[result.name])


@pytest.mark.parametrize(
    ("shape", "chunks", "size"),
    [((97, 131), (30, 40), 5), ((97, 131), (13, 17), 7), ((64, 64), (64, 20), 9)],
)
def test_tiles_equal_the_whole_image_filter(shape, chunks, size):
    image = np.random.default_rng(3).normal(size=shape).astype(np.float32)
    tiled = _tiled_box_max(image, chunks, size).compute(scheduler="sync")
    np.testing.assert_array_equal(tiled, ndimage.maximum_filter(image, size=size))


def test_neighbours_take_edge_cuts_not_whole_blocks():
    image = np.arange(90 * 120, dtype=np.float32).reshape(90, 120)
    result = _tiled_box_max(image, (30, 40), 5)
    layer = _layer(result)
    source = da.from_array(image, chunks=(30, 40)).name
    cut_keys = [k for k in layer if k[0].startswith("box-max-halo-")]
    # Every block of the 3x3 grid has a neighbour, so each is cut once.
    assert len(cut_keys) == 9
    middle = layer[(result.name, 1, 1)]
    deps = [a for a in middle[2:] if isinstance(a, tuple)]
    # Its own block whole, and the eight neighbours' cuts only.
    assert deps.count((source, 1, 1)) == 1
    assert sum(d[0].startswith("box-max-halo-") for d in deps) == 8
    assert not any(d[0] == source and d[1:] != (1, 1) for d in deps)
    np.testing.assert_array_equal(
        result.compute(scheduler="sync"), ndimage.maximum_filter(image, size=5)
    )


def test_a_cut_holds_only_the_strips_its_neighbours_need():
    image = np.zeros((90, 120), dtype=np.float32)
    layer = _layer(_tiled_box_max(image, (30, 40), 5))
    cuts = {k: v for k, v in layer.items() if k[0].startswith("box-max-halo-")}
    _, _, rects = cuts[next(k for k in cuts if k[1:] == (1, 1))]
    area = sum((y1 - y0) * (x1 - x0) for y0, y1, x0, x1 in rects)
    # 4 sides and 4 corners of a 2-pixel halo around a 30x40 block.
    assert len(rects) == 8
    assert area == 2 * (2 * 40 + 2 * 30) + 4 * 2 * 2


def test_a_deep_halo_takes_whole_blocks():
    image = np.random.default_rng(1).normal(size=(60, 60)).astype(np.float32)
    # A 21x21 box needs 10 px of 20-px blocks: more than EDGE_CUT_FRACTION
    # of a block, so cutting would not save anything.
    assert 2 * 10 * 20 > EDGE_CUT_FRACTION * 20 * 20
    result = _tiled_box_max(image, (20, 20), 21)
    assert not any(k[0].startswith("box-max-halo-") for k in _layer(result))
    np.testing.assert_array_equal(
        result.compute(scheduler="sync"), ndimage.maximum_filter(image, size=21)
    )


def test_without_cuts_neighbours_take_whole_blocks():
    image = np.random.default_rng(2).normal(size=(90, 120)).astype(np.float32)
    array = da.from_array(image, chunks=(30, 40))
    result = tile_map(
        _box_max,
        [TileInput(array, depth=(2, 2))],
        name="box-max",
        dtype=image.dtype,
        kwargs={"size": 5},
        cut_halos=False,
    )
    layer = _layer(result)
    assert not any(k[0].startswith("box-max-halo-") for k in layer)
    assert sum(isinstance(a, tuple) for a in layer[(result.name, 1, 1)][2:]) == 9
    np.testing.assert_array_equal(
        result.compute(scheduler="sync"), ndimage.maximum_filter(image, size=5)
    )


def test_edge_cuts_on_worker_processes():
    """Cuts run where their block is and reach tiles on the other worker."""
    from distributed import Client, LocalCluster

    from tilesky.backends import Tiled
    from tilesky.cluster import blocks_travel

    image = np.random.default_rng(7).normal(size=(150, 160)).astype(np.float32)
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        assert blocks_travel(client)
        assert Tiled()._cut_halos
        tiled = client.compute(_tiled_box_max(image, (50, 40), 7)).result()
    np.testing.assert_array_equal(tiled, ndimage.maximum_filter(image, size=7))


def test_no_cuts_where_tiles_share_memory():
    from tilesky.backends import Tiled
    from tilesky.cluster import blocks_travel, execution

    assert not blocks_travel(None)
    with execution(announce=lambda _: None) as ctx:
        # The default cluster: one worker inside this process.
        assert not blocks_travel(ctx.client)
        assert not Tiled()._cut_halos
    with execution("threads", announce=lambda _: None):
        assert not Tiled()._cut_halos
