"""Strip-wise vectorization (gis.maskstrips, gis.vectorize.vectorize_source): the same network,
clean-up and polygons as the whole mask at once, reading at most a strip and its margins."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio import features
from scipy import ndimage
from skimage.morphology import skeletonize

from gis.errors import CancelledError, RasterReadError, VectorizeError
from gis.graph import skeleton_pixels_to_graph, skeleton_to_graph
from gis.maskstrips import (
    ArrayMaskSource,
    PackedRows,
    RasterMaskSource,
    clean_mask_strips,
    strip_bounds,
)
from gis.vectorize import (
    VectorizeParams,
    mask_to_polygons,
    vectorize_mask,
    vectorize_mask_file,
    vectorize_source,
)

UTM = "EPSG:32633"
PX = 0.5
T_UTM = Affine(PX, 0, 500000.0, 0, -PX, 5000000.0)


def road_scene(h: int = 420, w: int = 380, seed: int = 0) -> np.ndarray:
    """Roads of several widths and directions, blobs with holes, small specks and a loop."""
    rng = np.random.default_rng(seed)
    m = np.zeros((h, w), bool)
    m[60:72, :] = True  # horizontal road
    m[:, 200:209] = True  # vertical road through every strip
    rr, cc = np.mgrid[0:h, 0:w]
    m |= np.abs(rr - 0.8 * cc - 120) < 5  # diagonal
    m |= np.abs(np.hypot(rr - 300, cc - 90) - 50) < 4  # ring road
    blobs = ndimage.gaussian_filter(rng.random((h, w)), 3)
    m |= blobs > np.quantile(blobs, 0.93)  # parking lots with holes
    m &= ~(rng.random((h, w)) < 0.01)  # pinholes (filled by the clean-up)
    m |= rng.random((h, w)) < 0.002  # specks (removed)
    return m


def same_network(a, b) -> None:
    assert len(a.edges) == len(b.edges) and len(a.nodes) == len(b.nodes)
    for x, y in zip(a.edges.geometry, b.edges.geometry):
        assert x.equals_exact(y, 1e-9)
    for col in ("u", "v", "length_m", "width_m", "confidence", "bridged_m", "component"):
        np.testing.assert_allclose(a.edges[col].to_numpy(float), b.edges[col].to_numpy(float),
                                   rtol=0, atol=1e-9, err_msg=col)
    for x, y in zip(a.nodes.geometry, b.nodes.geometry):
        assert x.equals_exact(y, 1e-9)


def whole_mask_clean(m: np.ndarray, small: int, hole: int) -> np.ndarray:
    """Reference clean-up on the whole array: 8-connected objects <= small removed, 4-connected
    background components <= hole not touching the border filled."""
    lab, _ = ndimage.label(m, structure=np.ones((3, 3), bool))
    sizes = np.bincount(lab.ravel())
    drop = sizes <= small
    drop[0] = False
    m = m & ~drop[lab]
    lab, _ = ndimage.label(~m)
    sizes = np.bincount(lab.ravel())
    fill = sizes <= hole
    fill[0] = False
    fill[np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))] = False
    return m | fill[lab]


@pytest.mark.parametrize("rows", [7, 33, 100])
def test_clean_mask_matches_whole_mask_labelling_across_seams(rows):
    m = road_scene()
    # a 30-px speck and a 20-px hole that straddle seams, each in a cleared area; and a 160-px
    # background region enclosed by road (kept)
    m[90:130, 355:380] = False
    m[95:125, 370] = True
    m[145:195, 15:65] = False
    m[150:190, 20:60] = True
    m[160:170, 30:32] = False
    m[300:330, 250:300] = True
    m[305:325, 255:295] = False
    strips = strip_bounds(m.shape[0], rows)
    got = np.zeros_like(m)

    def emit(r0, part):
        got[r0:r0 + len(part)] = part

    clean_mask_strips(lambda a, b: m[a:b], strips, 40, 25, emit)
    np.testing.assert_array_equal(got, whole_mask_clean(m, 40, 25))
    assert got[95:125, 370].sum() == 0 and got[160:170, 30:32].all()
    assert not got[305:325, 255:295].any()


@pytest.mark.parametrize("rows", [29, 64, 150])
def test_strips_give_the_same_network_as_the_whole_mask(rows):
    m = road_scene()
    prob = np.where(m, 0.8, 0.1).astype(np.float32)
    prob[:, :40] = np.nan
    whole = vectorize_mask(m, T_UTM, UTM, prob, strip_rows=10_000)
    assert len(whole.edges) > 20 and whole.summary()["total_km"] > 0.5
    same_network(whole, vectorize_mask(m, T_UTM, UTM, prob, strip_rows=rows))


def test_strip_skeleton_traced_from_pixels_equals_the_dense_tracing():
    m = road_scene(seed=3)
    sk = skeletonize(m)
    rows, cols = np.nonzero(sk)
    perm = np.random.default_rng(1).permutation(len(rows))
    a = skeleton_to_graph(sk)
    b = skeleton_pixels_to_graph(rows[perm], cols[perm], sk.shape)
    assert list(a.nodes) == list(b.nodes) and a.number_of_edges() == b.number_of_edges() > 10
    for (u1, v1, d1), (u2, v2, d2) in zip(a.edges(data=True), b.edges(data=True)):
        assert (u1, v1) == (u2, v2)
        np.testing.assert_array_equal(d1["rc"], d2["rc"])


class CountingSource(ArrayMaskSource):
    """An array source that records the rows of every read."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.reads = []

    def read_mask(self, r0, r1):
        self.reads.append((r0, r1))
        return super().read_mask(r0, r1)

    def read_probability(self, r0, r1):
        self.reads.append((r0, r1))
        return super().read_probability(r0, r1)


def test_source_is_read_one_strip_at_a_time_and_the_scratch_file_is_removed(tmp_path,
                                                                            monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    m = road_scene()
    src = CountingSource(m, T_UTM, UTM, np.where(m, 0.9, 0.0).astype(np.float32))
    net = vectorize_source(src, strip_rows=50, polygons=True)
    assert net.summary()["edges"] > 20 and len(net.polygons) > 5
    assert max(b - a for a, b in src.reads) <= 50
    assert {a for a, _ in src.reads} == set(range(0, m.shape[0], 50))
    assert list(tmp_path.iterdir()) == []  # the packed cleaned mask was a temporary file


def test_packed_rows_round_trip_in_memory_and_on_disk():
    rng = np.random.default_rng(0)
    a = rng.random((23, 37)) > 0.5
    for in_memory in (True, False):
        with PackedRows(23, 37, in_memory) as store:
            store.write(0, a[:10])
            store.write(10, a[10:])
            np.testing.assert_array_equal(store.read(5, 19), a[5:19])


def test_polygons_do_not_depend_on_the_strips():
    m = road_scene()
    whole = mask_to_polygons(m, T_UTM, UTM, strip_rows=10_000)
    cut = mask_to_polygons(m, T_UTM, UTM, strip_rows=37)
    assert len(whole) == len(cut) > 10
    assert whole.is_valid.all() and cut.is_valid.all()
    assert cut.area_m2.sum() == pytest.approx(whole.area_m2.sum(), rel=1e-9)
    # the vertical road crosses all 12 seams and is one polygon with the rest of the network
    assert cut.area_m2.max() == pytest.approx(whole.area_m2.max(), rel=1e-9)
    unsimplified = mask_to_polygons(m, T_UTM, UTM, 0, strip_rows=37)
    assert unsimplified.area_m2.sum() == pytest.approx(m.sum() * PX * PX)


def test_corner_touching_lobes_are_separate_valid_polygons():
    m = np.zeros((20, 20), bool)
    m[2:8, 2:8] = True
    m[8:14, 8:14] = True  # touches the first square only at a corner
    polys = mask_to_polygons(m, T_UTM, UTM, 0)
    assert len(polys) == 2 and polys.is_valid.all()
    assert sorted(polys.area_m2) == pytest.approx([9.0, 9.0])
    assert len(mask_to_polygons(m, T_UTM, UTM, 0, strip_rows=8)) == 2


def write_tif(path, arr, dtype, nodata=None, transform=T_UTM, crs=UTM):
    prof = dict(driver="GTiff", width=arr.shape[1], height=arr.shape[0], count=1, dtype=dtype,
                crs=crs, transform=transform, nodata=nodata, tiled=True, blockxsize=128,
                blockysize=128)
    with rasterio.open(path, "w", **prof) as ds:
        ds.write(arr.astype(dtype), 1)
    return path


@pytest.mark.slow
def test_raster_source_reads_masks_and_probabilities_by_strips(tmp_path):
    m = road_scene()
    prob = np.where(m, 0.85, 0.05)
    u8 = np.rint(prob * 254).astype(np.uint8)
    u8[:, :30] = 255  # no data
    mask_tif = write_tif(tmp_path / "m.tif", m, "uint8")
    prob_tif = write_tif(tmp_path / "p.tif", u8, "uint8", nodata=255)
    ref = vectorize_mask(m, T_UTM, UTM, u8)
    a = vectorize_mask_file(mask_tif, prob_tif, strip_rows=60)
    same_network(ref, a)
    assert np.nanmax(a.edges.confidence) == pytest.approx(216 / 254)
    # the probability alone, thresholded, gives the mask without its no-data stripe
    b = vectorize_mask_file(None, prob_tif, strip_rows=60)
    same_network(vectorize_mask(m & (u8 != 255), T_UTM, UTM, u8), b)
    with RasterMaskSource(prob_tif, mask_is_probability=True, threshold=0.5) as src:
        part = src.read_probability(10, 20)
        assert part.shape == (10, m.shape[1]) and np.isnan(part[:, :30]).all()
        np.testing.assert_array_equal(src.read_mask(10, 20), m[10:20] & (u8[10:20] != 255))


def test_raster_source_errors_name_the_file(tmp_path):
    m = road_scene(60, 50)
    mask_tif = write_tif(tmp_path / "m.tif", m, "uint8")
    other = write_tif(tmp_path / "other.tif", m, "float32",
                      transform=Affine(1.0, 0, 500000.0, 0, -1.0, 5000000.0))
    with pytest.raises(VectorizeError, match="other.tif: probability grid does not match"):
        RasterMaskSource(mask_tif, prob_path=other)
    with pytest.raises(RasterReadError, match="nope.tif: file not found"):
        RasterMaskSource(tmp_path / "nope.tif")
    with pytest.raises(VectorizeError, match="band 2 requested"):
        RasterMaskSource(mask_tif, band=2)


def test_cancel_between_strips():
    m = road_scene()
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 3  # during the clean-up's first pass

    with pytest.raises(CancelledError):
        vectorize_mask(m, T_UTM, UTM, should_cancel=cancel, strip_rows=40)
    assert len(calls) == 4


@pytest.mark.slow
def test_real_vegas_mask_in_strips(shared_data):
    """SpaceNet Vegas img0 ground truth buffered by 2 m: strips of 100 rows give the network of
    the whole 1300 x 1300 mask."""
    import geopandas as gpd

    tif = shared_data / "geotiff/RGB-PanSharpen_AOI_2_Vegas_img0.tif"
    ref = gpd.read_file(shared_data / "graphs/apls_sample/gt_json_prop_wkt/ground_truth_randomized"
                        "/AOI_2_Vegas_img0.geojson")
    with rasterio.open(tif) as ds:
        transform, crs, shape = ds.transform, ds.crs, (ds.height, ds.width)
    zone = ref.to_crs(ref.estimate_utm_crs()).buffer(2.0).to_crs(crs)
    mask = features.rasterize([(g, 1) for g in zone], out_shape=shape, transform=transform) > 0
    params = VectorizeParams()
    whole = vectorize_mask(mask, transform, crs, params=params, strip_rows=10_000)
    assert whole.summary()["total_km"] > 3
    same_network(whole, vectorize_mask(mask, transform, crs, params=params, strip_rows=100))


def test_raster_source_bounds_gdal_cache_in_bytes_while_open(tmp_path):
    from rasterio.env import get_gdal_config

    from gis import maskstrips

    mask_tif = write_tif(tmp_path / "m.tif", road_scene(60, 50), "uint8")
    before = get_gdal_config("GDAL_CACHEMAX")
    with RasterMaskSource(mask_tif) as src:
        # an integer GDAL_CACHEMAX counts bytes for rasterio: megabytes, not a 16-byte cache
        assert int(get_gdal_config("GDAL_CACHEMAX")) == maskstrips.GDAL_CACHE_MB << 20
        assert src.read_mask(0, 60).shape == (60, 50)
    assert get_gdal_config("GDAL_CACHEMAX") == before
