"""gis.tiling: pure arithmetic of tile plans."""
from __future__ import annotations

import numpy as np
import pytest
from rasterio.windows import Window

from gis.tiling import Tile, plan_tiles


def _coverage(tiles, width, height, attr):
    """Count how many times each raster pixel is covered by ``attr`` windows (clipped)."""
    cnt = np.zeros((height, width), np.int32)
    for t in tiles:
        w = getattr(t, attr)
        c0, r0 = int(w.col_off), int(w.row_off)
        c1, r1 = c0 + int(w.width), r0 + int(w.height)
        cnt[max(r0, 0):min(r1, height), max(c0, 0):min(c1, width)] += 1
    return cnt


@pytest.mark.parametrize(
    "width,height,tile,overlap",
    [(100, 70, 32, 8), (64, 64, 32, 0), (65, 33, 32, 8), (200, 10, 64, 16), (97, 101, 16, 5),
     (50, 50, 64, 16), (1, 1, 8, 0)],
)
def test_cores_partition_area_and_tiles_cover_it(width, height, tile, overlap):
    tiles = plan_tiles(width, height, tile, overlap)
    assert _coverage(tiles, width, height, "core_window").min() == 1
    assert _coverage(tiles, width, height, "core_window").max() == 1
    assert _coverage(tiles, width, height, "window").min() >= 1
    for t in tiles:
        assert isinstance(t, Tile)
        assert (t.window.width, t.window.height) == (tile, tile)
        # core lies inside its window
        assert t.core_window.col_off >= t.window.col_off
        assert t.core_window.row_off >= t.window.row_off
        assert t.core_window.col_off + t.core_window.width <= t.window.col_off + tile
        assert t.core_window.row_off + t.core_window.height <= t.window.row_off + tile
        assert t.core_window.width > 0 and t.core_window.height > 0


def test_grid_counts_stride_and_order():
    tiles = plan_tiles(100, 70, 32, 8)
    # stride 24: x needs ceil((100-32)/24)+1 = 4 tiles, y ceil((70-32)/24)+1 = 3
    assert len(tiles) == 12
    assert [t.index for t in tiles[:5]] == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0)]
    assert [int(t.window.col_off) for t in tiles[:4]] == [0, 24, 48, 72]
    assert [int(tiles[i * 4].window.row_off) for i in range(3)] == [0, 24, 48]
    # last partial tile kept: reaches past the raster, padded by boundless reads
    last = tiles[-1]
    assert last.window.col_off + last.window.width > 100
    assert last.core_window.col_off + last.core_window.width == 100
    # neighbours overlap by exactly overlap_px
    a, b = tiles[0].window, tiles[1].window
    assert a.col_off + a.width - b.col_off == 8
    # row-major: row offsets never decrease
    rows = [t.window.row_off for t in tiles]
    assert rows == sorted(rows)


def test_raster_smaller_than_tile_gives_one_padded_tile():
    tiles = plan_tiles(20, 10, 64, 16)
    assert len(tiles) == 1
    t = tiles[0]
    assert t.window == Window(0, 0, 64, 64)
    assert t.core_window == Window(0, 0, 20, 10)


def test_area_window_offset():
    area = Window(10, 5, 50, 40)
    tiles = plan_tiles(100, 100, 32, 8, area_window=area)
    assert tiles[0].window.col_off == 10 and tiles[0].window.row_off == 5
    cnt = _coverage(tiles, 100, 100, "core_window")
    inside = np.zeros_like(cnt, bool)
    inside[5:45, 10:60] = True
    assert (cnt[inside] == 1).all()
    assert (cnt[~inside] == 0).all()


@pytest.mark.parametrize(
    "kw,msg",
    [
        (dict(width=10, height=10, tile_size_px=16, overlap_px=16), "smaller than tile_size_px"),
        (dict(width=10, height=10, tile_size_px=16, overlap_px=20), "smaller than tile_size_px"),
        (dict(width=10, height=10, tile_size_px=16, overlap_px=-1), "non-negative"),
        (dict(width=0, height=10, tile_size_px=16, overlap_px=0), "width"),
        (dict(width=10, height=10, tile_size_px=0, overlap_px=0), "tile_size_px"),
        (dict(width=10, height=10, tile_size_px=8, overlap_px=0, area_window=Window(5, 5, 10, 2)),
         "not inside"),
        (dict(width=10, height=10, tile_size_px=8, overlap_px=0, area_window=Window(0, 0, 0, 2)),
         "empty"),
        (dict(width=10, height=10, tile_size_px=8, overlap_px=0, area_window=Window(0.5, 0, 2, 2)),
         "integer"),
    ],
)
def test_validation_errors(kw, msg):
    with pytest.raises(ValueError, match=msg):
        plan_tiles(**kw)
