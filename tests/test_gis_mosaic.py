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


def _reference_blend(area, k, tile, overlap, items):
    """The blending formula written out plainly over the whole area: for every tile in order
    ``sum += float32(p) * w`` and ``wsum += w`` (float32), then ``sum / wsum`` where covered."""
    from gis.tiling import tile_offsets

    aw, ah = int(area.width), int(area.height)
    last_x = tile_offsets(aw, tile, overlap)[-1]
    last_y = tile_offsets(ah, tile, overlap)[-1]
    s = np.zeros((k, ah, aw), np.float32)
    ws = np.zeros((ah, aw), np.float32)
    val = np.zeros((ah, aw), bool)
    for t, p, v in items:
        ty, tx = int(t.window.row_off - area.row_off), int(t.window.col_off - area.col_off)
        w = np.outer(ramp_profile(tile, overlap, ty > 0, ty < last_y),
                     ramp_profile(tile, overlap, tx > 0, tx < last_x)).astype(np.float32)
        y1, x1 = min(ty + tile, ah), min(tx + tile, aw)
        h, wd = y1 - ty, x1 - tx
        s[:, ty:y1, tx:x1] = s[:, ty:y1, tx:x1] + p[:, :h, :wd].astype(np.float32) * w[:h, :wd]
        ws[ty:y1, tx:x1] = ws[ty:y1, tx:x1] + w[:h, :wd]
        val[ty:y1, tx:x1] |= True if v is None else v[:h, :wd]
    safe = np.where(ws > 0, ws, np.float32(1.0))
    return s / safe, val & (ws > 0), ws > 0


@pytest.mark.parametrize("k,tile,overlap,skip", [(1, 32, 8, False), (2, 16, 6, True),
                                                 (3, 24, 0, False), (1, 40, 12, True)])
def test_blending_equals_the_reference_formula_bit_for_bit(k, tile, overlap, skip):
    """The in-place accumulation (reused product buffer, division only where covered) gives
    exactly the float32 values of the plain formula, float64 input probabilities, area windows,
    valid masks and uncovered rows (a skipped tile) included."""
    rng = np.random.default_rng(5)
    area = Window(7, 3, 83, 61)
    tiles = plan_tiles(100, 70, tile, overlap, area_window=area)
    items = []
    for i, t in enumerate(tiles):
        if skip and i == len(tiles) // 2:
            continue  # an area part no tile covers: invalid, probability 0
        p = rng.random((k, tile, tile))  # float64: cast to float32 before weighting
        v = None if i % 3 == 0 else rng.random((tile, tile)) > 0.1
        items.append((t, p, v))
    sink = _Collect(k, 61, 83)
    acc = MosaicAccumulator(area, k, tile, overlap, sink)
    for t, p, v in items:
        acc.add(t, p, v)
    acc.finish()
    ref, ref_valid, covered = _reference_blend(area, k, tile, overlap, items)
    np.testing.assert_array_equal(sink.out, ref)
    np.testing.assert_array_equal(sink.valid, ref_valid)
    assert sink.out.dtype == np.float32
    assert skip == (not covered.all())
    assert (sink.out[:, ~covered] == 0).all() and not sink.valid[~covered].any()


def test_probabilities_to_uint8_equals_the_plain_formula():
    """round(p * 254) halves to even, clipped to 0..254, as the one-line formula; the input is
    only overwritten when the caller allows it (and only a writable float32 one)."""
    k = np.arange(0, PROB_SCALE + 1, dtype=np.float32)
    ties = (k + np.float32(0.5)) / np.float32(PROB_SCALE)  # p * 254 lands on .5 for some
    rng = np.random.default_rng(2)
    p = np.concatenate([ties, k / PROB_SCALE, rng.uniform(-0.5, 1.5, 4000).astype(np.float32),
                        np.float32([-0.0, 1e-9, 0.99999994, 1.0000001, 3e38, -3e38])])
    p = p.reshape(1, 2, -1)
    valid = rng.random(p.shape[1:]) > 0.2
    ref = np.clip(np.rint(p * PROB_SCALE), 0, PROB_SCALE).astype(np.uint8)
    ref[..., ~valid] = PROB_NODATA
    before = p.copy()
    np.testing.assert_array_equal(probabilities_to_uint8(p, valid), ref)
    np.testing.assert_array_equal(p, before)  # left alone by default
    np.testing.assert_array_equal(probabilities_to_uint8(p.astype(np.float64), valid), ref)
    p64 = p.astype(np.float64)
    probabilities_to_uint8(p64, valid, overwrite_input=True)  # not float32: copied
    np.testing.assert_array_equal(p64, before.astype(np.float64))
    scratch = p.copy()
    np.testing.assert_array_equal(probabilities_to_uint8(scratch, valid, overwrite_input=True), ref)
    np.testing.assert_array_equal(probabilities_to_uint8(p), np.clip(
        np.rint(p * PROB_SCALE), 0, PROB_SCALE).astype(np.uint8))
