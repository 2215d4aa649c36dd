"""gis.mosaic: blending is exact for an identity model, seamless, and strip-bounded in memory."""
from __future__ import annotations

import numpy as np
import pytest
from rasterio.windows import Window

from gis.mosaic import (
    PROB_NODATA,
    PROB_SCALE,
    MosaicAccumulator,
    probabilities_to_uint8,
    ramp_profile,
)
from gis.tiling import plan_tiles


def _tile_of(img, window):
    """Boundless crop ``(K, T, T)`` of ``img`` (K, H, W), zero padded."""
    k, h, w = img.shape
    t = np.zeros((k, int(window.height), int(window.width)), img.dtype)
    r0, c0 = int(window.row_off), int(window.col_off)
    r1, c1 = min(r0 + int(window.height), h), min(c0 + int(window.width), w)
    t[:, : r1 - r0, : c1 - c0] = img[:, r0:r1, c0:c1]
    return t


class _Collect:
    """Writer that assembles the strips and records their sizes."""

    def __init__(self, k, h, w):
        self.out = np.full((k, h, w), np.nan, np.float32)
        self.valid = np.zeros((h, w), bool)
        self.strips = []

    def __call__(self, row, probs, valid):
        h = probs.shape[1]
        assert np.isnan(self.out[:, row:row + h]).all(), "rows written twice"
        self.out[:, row:row + h] = probs
        self.valid[row:row + h] = valid
        self.strips.append((row, h))


def _run(img, tile, overlap, area=None, func=lambda t: t, valid_fn=None):
    k, h, w = img.shape
    area = area or Window(0, 0, w, h)
    tiles = plan_tiles(w, h, tile, overlap, area_window=area)
    sink = _Collect(k, int(area.height), int(area.width))
    acc = MosaicAccumulator(area, k, tile, overlap, sink)
    for t in tiles:
        acc.add(t, func(_tile_of(img, t.window)), None if valid_fn is None else valid_fn(t.window))
    acc.finish()
    return sink, acc, tiles


@pytest.mark.parametrize("shape,tile,overlap", [((1, 70, 90), 32, 8), ((2, 64, 64), 16, 6),
                                                ((1, 20, 30), 64, 16), ((3, 41, 37), 16, 0)])
def test_identity_round_trip_is_exact(shape, tile, overlap):
    img = np.random.default_rng(1).random(shape).astype(np.float32)
    sink, acc, _ = _run(img, tile, overlap)
    np.testing.assert_allclose(sink.out, img, rtol=0, atol=1e-6)
    assert sink.valid.all()
    # strips are contiguous and cover every row once
    rows = [r for r, _ in sink.strips]
    assert rows[0] == 0 and sum(h for _, h in sink.strips) == shape[1]
    assert rows == sorted(rows)


def test_identity_round_trip_with_area_window():
    img = np.random.default_rng(2).random((1, 80, 80)).astype(np.float32)
    area = Window(7, 11, 50, 45)
    sink, _, _ = _run(img, 16, 4, area=area)
    np.testing.assert_allclose(sink.out, img[:, 11:56, 7:57], rtol=0, atol=1e-6)


def test_blending_is_seamless():
    """A model whose output depends on the tile position (a constant offset per tile) must give
    a result without jumps: the blend of constants varies by less than the gap between them per
    pixel step across an overlap."""
    h = w = 64
    tile, overlap = 32, 16
    tiles = plan_tiles(w, h, tile, overlap)
    sink = _Collect(1, h, w)
    acc = MosaicAccumulator(Window(0, 0, w, h), 1, tile, overlap, sink)
    for t in tiles:
        value = 0.2 + 0.3 * ((t.index[0] + t.index[1]) % 2)  # checkerboard 0.2 / 0.5
        acc.add(t, np.full((1, tile, tile), value, np.float32))
    acc.finish()
    out = sink.out[0]
    # hard tiling would jump by 0.3 between neighbours; blending spreads it over 16 px
    assert np.abs(np.diff(out, axis=1)).max() < 0.3 / 4
    assert np.abs(np.diff(out, axis=0)).max() < 0.3 / 4
    assert out.min() >= 0.2 - 1e-6 and out.max() <= 0.5 + 1e-6


def test_ramp_weights_partition_of_unity_and_never_zero():
    T, ov = 32, 10
    left = ramp_profile(T, ov, ramp_start=False, ramp_end=True)
    right = ramp_profile(T, ov, ramp_start=True, ramp_end=False)
    np.testing.assert_allclose(left[T - ov:] + right[:ov], 1.0, atol=1e-12)
    assert left[0] == 1.0 and right[-1] == 1.0  # no ramp at the area edges
    assert (left > 0).all() and (right > 0).all()


def test_buffer_is_bounded_to_one_strip():
    img = np.random.default_rng(3).random((1, 200, 40)).astype(np.float32)
    sink, acc, tiles = _run(img, 32, 8)
    assert acc.buffer_rows == 32
    assert acc._sum.shape == (1, 32, 40) and acc._wsum.shape == (32, 40)
    assert acc.max_buffer_rows_used <= 32
    # strips are flushed progressively, not all at the end
    assert len(sink.strips) >= len({t.index[0] for t in tiles})


def test_rows_are_flushed_as_soon_as_no_tile_touches_them():
    h, w, tile, overlap = 100, 20, 32, 8
    tiles = plan_tiles(w, h, tile, overlap)
    sink = _Collect(1, h, w)
    acc = MosaicAccumulator(Window(0, 0, w, h), 1, tile, overlap, sink)
    for t in tiles:
        acc.add(t, np.ones((1, tile, tile), np.float32))
        # everything above the current tile row has been written
        assert acc.rows_written == int(t.window.row_off)
    acc.finish()
    assert acc.rows_written == h


def test_valid_mask_and_out_of_order_tiles():
    img = np.random.default_rng(4).random((1, 40, 40)).astype(np.float32)
    invalid = np.zeros((40, 40), bool)
    invalid[:, :10] = True

    def valid_fn(win):
        v = np.zeros((int(win.height), int(win.width)), bool)
        r0, c0 = int(win.row_off), int(win.col_off)
        r1, c1 = min(r0 + v.shape[0], 40), min(c0 + v.shape[1], 40)
        v[: r1 - r0, : c1 - c0] = ~invalid[r0:r1, c0:c1]
        return v

    sink, _, tiles = _run(img, 16, 4, valid_fn=valid_fn)
    assert (sink.valid == ~invalid).all()
    acc = MosaicAccumulator(Window(0, 0, 40, 40), 1, 16, 4, lambda *a: None)
    later = [t for t in tiles if t.index[0] == 1][0]
    acc.add(later, np.zeros((1, 16, 16), np.float32))
    with pytest.raises(ValueError, match="row-major"):
        acc.add(tiles[0], np.zeros((1, 16, 16), np.float32))
    with pytest.raises(ValueError, match="shape"):
        acc.add(later, np.zeros((2, 16, 16), np.float32))


def test_probabilities_to_uint8():
    p = np.array([[0.0, 0.5, 1.0, 1.2]], np.float32)
    valid = np.array([[True, True, True, False]])
    q = probabilities_to_uint8(p, valid)
    assert q.dtype == np.uint8
    assert q.tolist() == [[0, round(0.5 * PROB_SCALE), PROB_SCALE, PROB_NODATA]]
