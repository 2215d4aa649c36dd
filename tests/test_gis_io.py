"""gis.io: opening, describing, reading, normalising and writing rasters."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.windows import Window

from gis.errors import CRSError, GisError, OutputDirError, OutputExistsError, RasterReadError
from gis.io import (
    compute_stretch,
    integer_percentiles,
    default_overview_count,
    make_normalizer,
    normalize,
    open_raster,
    Normalizer,
    raw_dtype,
    read_overview,
    read_window,
    read_window_raw,
    utm_crs_for_lonlat,
    write_cog,
)
from gis_fixtures import random_image, truncate_file, utm_transform, write_geotiff


# ------------------------------------------------------------------ open_raster
def test_open_raster_utm_uint8(tmp_path):
    p = write_geotiff(tmp_path / "a.tif", random_image((3, 32, 48)), transform=utm_transform(0.5),
                      descriptions=["r", "g", "b"])
    info = open_raster(p)
    assert (info.width, info.height, info.count) == (48, 32, 3)
    assert info.dtypes == ("uint8",) * 3
    assert info.crs == CRS.from_epsg(32633)
    assert info.transform.a == 0.5
    assert info.resolution_m == pytest.approx((0.5, 0.5))
    assert info.pixel_area_m2 == pytest.approx(0.25)
    assert info.band_descriptions == ("r", "g", "b")
    assert not info.has_alpha and info.nodata is None
    assert info.default_bands == (1, 2, 3)
    assert info.utm_crs() == CRS.from_epsg(32633)


def test_open_raster_geographic_resolution_in_metres(tmp_path):
    p = write_geotiff(tmp_path / "g.tif", random_image((1, 16, 16), "uint16"), crs="EPSG:4326")
    info = open_raster(p)
    assert info.is_geographic
    assert info.utm_crs() == CRS.from_epsg(32611)  # Las Vegas
    # 2.7e-6 deg: ~0.30 m north-south, times cos(36.24 deg) east-west
    assert info.resolution_m[1] == pytest.approx(0.2996, rel=0.01)
    assert info.resolution_m[0] == pytest.approx(0.2996 * np.cos(np.radians(36.24)), rel=0.01)


def test_utm_zone_helper():
    assert utm_crs_for_lonlat(15.0, 45.0) == CRS.from_epsg(32633)
    assert utm_crs_for_lonlat(-77.0, 24.0) == CRS.from_epsg(32618)
    assert utm_crs_for_lonlat(151.2, -33.9) == CRS.from_epsg(32756)


def test_missing_file(tmp_path):
    with pytest.raises(RasterReadError, match="not found") as ei:
        open_raster(tmp_path / "nope.tif")
    assert "nope.tif" in str(ei.value)
    assert isinstance(ei.value, OSError) and isinstance(ei.value, GisError)


def test_not_a_raster(tmp_path):
    p = tmp_path / "notes.tif"
    p.write_text("this is not a tiff")
    with pytest.raises(RasterReadError, match="not a raster") as ei:
        open_raster(p)
    assert "notes.tif" in str(ei.value) and "\n" not in str(ei.value)


def test_truncated_file_is_caught_at_open(tmp_path):
    p = write_geotiff(tmp_path / "full.tif", random_image((3, 200, 200)))
    t = truncate_file(p, tmp_path / "half.tif", 0.5)
    with pytest.raises(RasterReadError, match="truncated") as ei:
        open_raster(t)
    assert "half.tif" in str(ei.value)


def test_truncated_file_is_caught_at_read(tmp_path):
    p = write_geotiff(tmp_path / "full.tif", random_image((3, 200, 200)))
    t = truncate_file(p, tmp_path / "half.tif", 0.5)
    with pytest.raises(RasterReadError, match="half.tif"):
        read_window(t, Window(0, 0, 200, 200))


def test_no_crs_refused_unless_pixel_coords(tmp_path):
    p = write_geotiff(tmp_path / "nocrs.tif", random_image((1, 8, 8)), crs=None,
                      transform=utm_transform())
    with pytest.raises(CRSError, match="no CRS") as ei:
        open_raster(p)
    assert "nocrs.tif" in str(ei.value)
    info = open_raster(p, allow_pixel_coords=True)
    assert info.crs is None and info.resolution_m is None
    with pytest.raises(CRSError):
        info.utm_crs()


# ------------------------------------------------------------------ read_window
def test_read_window_boundless_and_band_selection(tmp_path):
    img = random_image((4, 20, 30))
    p = write_geotiff(tmp_path / "a.tif", img)
    with rasterio.open(p) as ds:
        data, valid = read_window(ds, Window(25, -3, 10, 10), bands=(3, 1))
    assert data.dtype == np.float32 and data.shape == (2, 10, 10)
    np.testing.assert_array_equal(data[0, 3:, :5], img[2, :7, 25:30])
    np.testing.assert_array_equal(data[1, 3:, :5], img[0, :7, 25:30])
    assert (data[:, :3] == 0).all() and (data[:, :, 5:] == 0).all()
    assert valid[3:, :5].all() and not valid[:3].any() and not valid[:, 5:].any()
    with pytest.raises(ValueError, match="1-based"):
        read_window(p, Window(0, 0, 4, 4), bands=(0,))


def test_valid_mask_from_nodata(tmp_path):
    img = random_image((3, 16, 16))
    img[:, :4, :] = 0  # nodata rows
    img[0, 10, 10] = 0  # a single zero band value is still data
    p = write_geotiff(tmp_path / "nd.tif", img, nodata=0)
    data, valid = read_window(p, Window(0, 0, 16, 16))
    assert not valid[:4].any() and valid[4:].all()


def test_valid_mask_from_alpha_band(tmp_path):
    img = random_image((4, 16, 16))
    img[3] = 255
    img[3, :, :6] = 0
    p = write_geotiff(tmp_path / "alpha.tif", img, alpha_band=4)
    info = open_raster(p)
    assert info.has_alpha and info.alpha_band == 4 and info.default_bands == (1, 2, 3)
    _, valid = read_window(p, Window(0, 0, 16, 16), bands=info.default_bands)
    assert not valid[:, :6].any() and valid[:, 6:].all()


def test_valid_mask_from_internal_mask(tmp_path):
    m = np.ones((16, 16), bool)
    m[10:, 10:] = False
    p = write_geotiff(tmp_path / "mask.tif", random_image((1, 16, 16), "float32"), internal_mask=m)
    info = open_raster(p)
    assert info.has_mask
    _, valid = read_window(p, Window(0, 0, 16, 16))
    assert (valid == m).all()


def _raw_cases(tmp_path):
    """Rasters with every kind of validity: none, nodata, alpha, internal mask, NaN floats."""
    u8 = random_image((3, 40, 50))
    nd = random_image((3, 40, 50), "uint16")
    nd[:, :5] = 0
    alpha = random_image((4, 40, 50))
    alpha[3] = 255
    alpha[3, :, :7] = 0
    fl = random_image((2, 40, 50), "float32")
    fl[1, 20, 30] = np.nan
    fl[0, 3, 3] = np.inf
    m = np.ones((40, 50), bool)
    m[30:, 40:] = False
    return [
        (write_geotiff(tmp_path / "u8.tif", u8), (1, 2, 3)),
        (write_geotiff(tmp_path / "u8t.tif", u8, tiled=True), (3, 1)),
        (write_geotiff(tmp_path / "nd.tif", nd, nodata=0), (1, 2, 3)),
        (write_geotiff(tmp_path / "alpha.tif", alpha, alpha_band=4), (1, 2, 3)),
        (write_geotiff(tmp_path / "fl.tif", fl), (2, 1)),
        (write_geotiff(tmp_path / "mask.tif", u8[:1], internal_mask=m), (1, 1, 1)),
    ]


@pytest.mark.parametrize("win", [Window(5, 6, 16, 16), Window(-4, 30, 16, 16),
                                 Window(40, -3, 16, 16), Window(45, 35, 16, 16),
                                 Window(0, 0, 50, 40), Window(60, 0, 8, 8)])
def test_read_window_raw_equals_read_window(tmp_path, win):
    """The pipeline's raw reader (own dtype, caller's buffers) gives read_window's values and
    mask for windows inside, across the edge of and outside the raster, with repeated bands,
    nodata, alpha, internal masks and NaN/inf floats."""
    for path, bands in _raw_cases(tmp_path):
        ref, ref_valid = read_window(path, win, bands)
        with rasterio.open(path) as ds:
            dt = raw_dtype(ds, bands)
            assert dt == np.dtype(ds.dtypes[bands[0] - 1])
            shape = (len(bands), int(win.height), int(win.width))
            out = np.full(shape, 99, dt)  # stale content must not survive
            valid_out = np.ones(shape[1:], bool)
            data, valid = read_window_raw(ds, win, bands, out=out, valid_out=valid_out)
            assert data is out and valid is valid_out
            fresh, fresh_valid = read_window_raw(ds, win, bands)
        assert data.dtype == dt
        np.testing.assert_array_equal(data.astype(np.float32), ref, err_msg=str(path))
        np.testing.assert_array_equal(valid, ref_valid, err_msg=str(path))
        np.testing.assert_array_equal(fresh, data)
        np.testing.assert_array_equal(fresh_valid, valid)


def test_read_window_raw_into_a_view_and_refusals(tmp_path):
    img = random_image((3, 20, 30))
    p = write_geotiff(tmp_path / "a.tif", img, tiled=True)
    big = np.zeros((3, 32, 32), np.uint8)
    with rasterio.open(p) as ds:
        view = big[:, 4:20, 8:24]  # not contiguous
        read_window_raw(ds, Window(3, 2, 16, 16), out=view)
        with pytest.raises(ValueError, match="out must be"):
            read_window_raw(ds, Window(0, 0, 8, 8), out=np.zeros((3, 8, 8), np.float32))
        with pytest.raises(ValueError, match="1-based"):
            read_window_raw(ds, Window(0, 0, 8, 8), bands=(4,))
    np.testing.assert_array_equal(big[:, 4:20, 8:24], img[:, 2:18, 3:19])
    assert not big[:, :4].any() and not big[:, :, :8].any()
    mixed = tmp_path / "mixed.vrt"
    with rasterio.open(p) as ds:  # a raster whose bands differ in dtype -> read_window instead
        assert raw_dtype(ds, (1, 2)) == np.uint8
    f = write_geotiff(tmp_path / "f.tif", random_image((1, 20, 30), "float32"))
    mixed.write_text(
        f'<VRTDataset rasterXSize="30" rasterYSize="20">'
        f'<VRTRasterBand dataType="Byte" band="1"><SimpleSource><SourceFilename>{p}'
        f'</SourceFilename><SourceBand>1</SourceBand></SimpleSource></VRTRasterBand>'
        f'<VRTRasterBand dataType="Float32" band="2"><SimpleSource><SourceFilename>{f}'
        f'</SourceFilename><SourceBand>1</SourceBand></SimpleSource></VRTRasterBand>'
        f'</VRTDataset>')
    with rasterio.open(mixed) as ds:
        assert raw_dtype(ds, (1, 2)) is None and raw_dtype(ds, (2,)) == np.float32
        with pytest.raises(ValueError, match="differ in dtype"):
            read_window_raw(ds, Window(0, 0, 8, 8), (1, 2))


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "int32", "float32", "float64"])
@pytest.mark.parametrize("method,mean,std", [
    ("uint8", None, None), ("uint8", [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ("percentile", [0.5], [0.3125]), ("percentile", None, None), ("none", [3.0], [2.0]),
])
def test_normalize_into_equals_normalize_bit_for_bit(dtype, method, mean, std):
    """Raw tiles of any dtype normalised straight into a float32 slot give exactly the values of
    normalize() on the float32 copy (the reader's old path), NaN included."""
    rng = np.random.default_rng(7)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        raw = rng.uniform(-50, 3000, (3, 24, 24)).astype(dt)
        raw[1, 3, 4] = np.nan
    else:
        info = np.iinfo(dt)
        raw = rng.integers(max(info.min, -3000), min(info.max, 70000), (3, 24, 24)).astype(dt)
    norm = Normalizer(method, None if mean is None else tuple(mean),
                      None if std is None else tuple(std), (10.0, 0.0, 100.5),
                      (200.0, 255.0, 2500.0))
    assert norm.fusable(3)
    batch = np.full((2, 3, 24, 24), -7.0, np.float32)
    got = norm.normalize_into(raw, batch[1])
    assert np.shares_memory(got, batch[1])
    ref = norm(raw.astype(np.float32))
    np.testing.assert_array_equal(batch[1], ref)
    assert (batch[0] == -7.0).all()  # only the given slot is written


def test_normalize_into_refuses_what_it_cannot_fuse():
    assert not Normalizer("uint8", None, (0.0,)).fusable(3)
    assert not Normalizer("uint8", (0.1, 0.2), None).fusable(3)  # 2 means for 3 channels
    with pytest.raises(ValueError, match="std <= 0"):
        Normalizer("uint8", None, (0.0,)).normalize_into(np.zeros((3, 2, 2), np.uint8),
                                                         np.zeros((3, 2, 2), np.float32))
    with pytest.raises(ValueError, match="float32"):
        Normalizer().normalize_into(np.zeros((3, 2, 2), np.uint8), np.zeros((3, 2, 2)))
    # built with lists (not hashable, so its coefficients are not cached): still exact
    raw = np.arange(12, dtype=np.uint8).reshape(3, 2, 2)
    listed = Normalizer("uint8", [0.5], [0.25])
    out = np.empty((3, 2, 2), np.float32)
    np.testing.assert_array_equal(listed.normalize_into(raw, out), listed(raw))


# ------------------------------------------------------------------ normalisation
def test_normalize_uint8_with_mean_std():
    x = np.full((3, 2, 2), 255, np.uint8)
    out = normalize(x, "uint8", mean=[0.5, 0.5, 0.5], std=[0.25, 0.5, 1.0])
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0, 0], [2.0, 1.0, 0.5])
    with pytest.raises(ValueError, match="mean"):
        normalize(x, "uint8", mean=[0.5, 0.5])


@pytest.mark.parametrize("method", ["uint8", "percentile", "none"])
@pytest.mark.parametrize("mean,std", [(None, None), ([0.5, 0.4, 0.3], [0.3125, 0.2, 1.0]),
                                      ([0.5, 0.4, 0.3], None), (None, [0.5, 0.5, 0.5])])
def test_normalize_matches_step_by_step_formula(method, mean, std):
    """The fused per-channel affine map gives the textbook result (scale, clip, mean, std)."""
    rng = np.random.default_rng(3)
    x = rng.uniform(-20, 300, (2, 3, 8, 8)).astype(np.float32)
    before = x.copy()
    lo, hi = np.array([10.0, 0.0, 50.0]), np.array([200.0, 255.0, 60.0])
    out = normalize(x, method, mean=mean, std=std, lo=lo, hi=hi)
    ref = x.astype(np.float64)
    if method == "uint8":
        ref = ref / 255.0
    elif method == "percentile":
        ref = np.clip((ref - lo[:, None, None]) / (hi - lo)[:, None, None], 0.0, 1.0)
    if mean is not None:
        ref = ref - np.asarray(mean)[:, None, None]
    if std is not None:
        ref = ref / np.asarray(std)[:, None, None]
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(x, before)  # the input is never modified
    if method == "percentile":  # clipped values land exactly on the stretched bounds
        m = np.zeros(3) if mean is None else np.asarray(mean)
        sd = np.ones(3) if std is None else np.asarray(std)
        assert np.isclose(out.min(axis=(0, 2, 3)), (0 - m) / sd).all()
        assert np.isclose(out.max(axis=(0, 2, 3)), (1 - m) / sd).all()


def test_percentile_stretch_is_global_not_per_tile(tmp_path):
    img = np.zeros((1, 64, 64), np.uint16)
    img[0] = np.linspace(100, 2000, 64, dtype=np.uint16)[None, :]  # left dark, right bright
    p = write_geotiff(tmp_path / "u16.tif", img)
    lo, hi = compute_stretch(p)
    assert lo[0] == pytest.approx(np.percentile(img, 2), rel=0.02)
    assert hi[0] == pytest.approx(np.percentile(img, 98), rel=0.02)
    norm = make_normalizer(open_raster(p))
    assert norm.method == "percentile"
    left, _ = read_window(p, Window(0, 0, 32, 64))
    right, _ = read_window(p, Window(32, 0, 32, 64))
    nl, nr = norm(left), norm(right)
    # the same raw value maps to the same output in both tiles; dark tile stays dark
    assert nl.max() < 0.6 and nr.min() > 0.4
    assert 0.0 <= nl.min() and nr.max() <= 1.0
    np.testing.assert_allclose(nl, np.clip((left - lo[0]) / (hi[0] - lo[0]), 0, 1), atol=1e-6)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "int8"])
def test_integer_percentiles_equal_numpy_to_the_bit(dtype):
    """The stretch's histogram percentiles are np.percentile's (linear), bit for bit: sizes 1 and
    up, narrow and full value ranges, percentiles at 0, 100 and in between."""
    rng = np.random.default_rng(7)
    info = np.iinfo(dtype)
    for n in (1, 2, 3, 7, 100, 999, 4096):
        for lo, hi in ((info.min, info.max), (3, 9), (0, 0), (info.max - 2, info.max)):
            v = rng.integers(lo, hi, n, endpoint=True).astype(dtype)
            for q in ((2.0, 98.0), (0.0, 100.0), (0.5, 99.9), (33.3, 66.7), (50.0, 50.0)):
                want = np.percentile(v.astype(np.float64), q)
                got = integer_percentiles(v, q)
                assert got.dtype == np.float64
                np.testing.assert_array_equal(got, want, err_msg=f"{dtype} n={n} q={q}")
    with pytest.raises(ValueError):
        integer_percentiles(np.zeros(0, dtype), (2.0, 98.0))


def test_compute_stretch_of_integer_raster_is_numpys_percentile(tmp_path):
    """uint16 with a nodata mask: the limits are np.percentile of the valid pixels exactly."""
    rng = np.random.default_rng(3)
    img = rng.integers(1, 4096, (2, 90, 70)).astype(np.uint16)
    img[:, :10, :] = 0
    p = write_geotiff(tmp_path / "u16n.tif", img, nodata=0)
    lo, hi = compute_stretch(p, (2, 1))
    for k, b in enumerate((2, 1)):
        valid = img[b - 1][img[b - 1] != 0].astype(np.float64)
        want = np.percentile(valid, (2.0, 98.0)).astype(np.float32)
        assert (lo[k], hi[k]) == (want[0], want[1])


def test_make_normalizer_picks_method_by_dtype(tmp_path):
    p8 = write_geotiff(tmp_path / "u8.tif", random_image((3, 8, 8)))
    pf = write_geotiff(tmp_path / "f.tif", random_image((1, 8, 8), "float32"))
    assert make_normalizer(p8).method == "uint8"
    assert make_normalizer(pf).method == "percentile"


# ------------------------------------------------------------------ overview
def test_read_overview_decimates(tmp_path):
    p = write_geotiff(tmp_path / "big.tif", random_image((1, 300, 200), "uint16"))
    ov = read_overview(p, max_size=100)
    assert ov.rgb.shape == (100, 67, 3) and ov.rgb.dtype == np.uint8
    assert (ov.rgb[..., 0] == ov.rgb[..., 2]).all()  # grey
    assert ov.scale == pytest.approx(3.0)
    assert ov.transform.a == pytest.approx(200 / 67)


# ------------------------------------------------------------------ COG writing
def _is_cog(path):
    with rasterio.open(path) as ds:
        return ds.profile.get("tiled") and ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"


def test_write_cog_layout_and_georeference(tmp_path):
    arr = random_image((1, 600, 600))
    out = write_cog(tmp_path / "c.tif", arr, crs="EPSG:32633", transform=utm_transform(2.0),
                    nodata=255)
    with rasterio.open(out) as ds:
        assert ds.profile["tiled"] and ds.block_shapes[0] == (512, 512)
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert ds.compression.name.upper() == "DEFLATE"
        assert ds.overviews(1) == [2, 4][: default_overview_count(600, 600)]
        assert ds.crs == CRS.from_epsg(32633) and ds.transform == utm_transform(2.0)
        assert ds.nodata == 255
        np.testing.assert_array_equal(ds.read(), arr)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["c.tif"]  # no temporaries left


def test_write_cog_refuses_overwrite(tmp_path):
    target = tmp_path / "c.tif"
    write_cog(target, np.zeros((8, 8), np.uint8), crs="EPSG:32633", transform=utm_transform())
    before = target.read_bytes()
    with pytest.raises(OutputExistsError, match="c.tif"):
        write_cog(target, np.ones((8, 8), np.uint8), crs="EPSG:32633", transform=utm_transform())
    assert target.read_bytes() == before
    write_cog(target, np.ones((8, 8), np.uint8), crs="EPSG:32633", transform=utm_transform(),
              overwrite=True)
    with rasterio.open(target) as ds:
        assert ds.read(1).min() == 1
    with pytest.raises(OutputDirError):
        write_cog(tmp_path / "missing" / "x.tif", np.ones((8, 8), np.uint8), crs=None,
                  transform=utm_transform())


# ------------------------------------------------------------------ real files
def test_real_landsat_utm_nodata(shared_data):
    p = shared_data / "geotiff" / "RGB.byte.tif"
    info = open_raster(p)
    assert info.crs == CRS.from_epsg(32618) and info.nodata == 0
    assert info.resolution_m[0] == pytest.approx(300.04, abs=0.01)
    win = Window(0, 0, info.width, info.height)
    data, valid = read_window(p, win)
    assert not valid[0, 0]  # the corner is nodata
    assert (data[:, ~valid] == 0).all()
    with rasterio.open(p) as ds:
        expected = ds.dataset_mask(window=win) > 0
    assert (valid == expected).all() and 0 < valid.mean() < 1


def test_real_vegas_geographic_four_bands(shared_data):
    p = shared_data / "geotiff" / "RGB-PanSharpen_AOI_2_Vegas_img0.tif"
    info = open_raster(p)
    assert info.crs == CRS.from_epsg(4326) and info.count == 4
    assert info.has_alpha and info.default_bands == (1, 2, 3)
    assert info.resolution_m[1] == pytest.approx(0.3, abs=0.01)
    assert info.utm_crs() == CRS.from_epsg(32611)
    ov = read_overview(p, max_size=128)
    assert max(ov.rgb.shape[:2]) == 128 and ov.rgb.std() > 5


def test_real_uint16_eleven_bit(shared_data):
    p = shared_data / "geotiff" / "road_mask_input.tif"
    info = open_raster(p)
    assert info.dtypes == ("uint16",)
    norm = make_normalizer(info)
    assert norm.method == "percentile"
    assert 0 < norm.lo[0] < norm.hi[0] <= 2047
    data, _ = read_window(p, Window(600, 600, 64, 64))
    out = norm(data)
    assert out.min() >= 0 and out.max() <= 1 and out.std() > 0.01


def test_write_and_read_mask_round_trip(tmp_path):
    from gis.io import read_mask_raster, write_mask

    m = np.zeros((30, 40), bool)
    m[10:20, 5:35] = True
    valid = np.ones_like(m)
    valid[:, :3] = False
    out = write_mask(tmp_path / "mask.tif", m, crs="EPSG:32633", transform=utm_transform(0.5),
                     valid=valid)
    back = read_mask_raster(out)
    assert (back.mask == (m & valid)).all() and (back.valid == valid).all()
    assert set(np.unique(back.values)) == {0, 1, 255}
    assert back.crs == CRS.from_epsg(32633) and back.resolution_m == pytest.approx((0.5, 0.5))
    part = read_mask_raster(out, Window(5, 10, 10, 5))
    assert part.mask.all() and part.transform.c == utm_transform(0.5).c + 2.5


def test_nan_pixels_of_float_rasters_are_invalid(tmp_path):
    img = random_image((2, 8, 8), "float32")
    img[1, 2, 3] = np.nan
    _, valid = read_window(write_geotiff(tmp_path / "nan.tif", img), Window(0, 0, 8, 8))
    assert not valid[2, 3] and valid.sum() == 63


@pytest.mark.parametrize("resampling,predictor", [("nearest", False), ("average", True)])
def test_cog_copy_temporary_overview_compression_leaves_the_cog_unchanged(
        tmp_path, resampling, predictor):
    """cog_copy keeps the COG driver's temporary overviews PACKBITS-compressed (cheap) rather
    than ZSTD: the COG is byte for byte what GDAL's default gives, also for odd sizes where
    uncompressed temporaries change the nearest-neighbour picks of the last overview."""
    import rasterio.shutil

    from gis.io import cog_copy

    rng = np.random.default_rng(4)
    mask = (rng.random((1, 1301, 1299)) > 0.7).astype(np.uint8)
    mask[0, ::7] = 255
    src = write_geotiff(tmp_path / "strips.tif", mask, nodata=255)
    n = default_overview_count(1299, 1301)
    ours = cog_copy(src, tmp_path / "ours.tif", overview_resampling=resampling,
                    predictor=predictor, level=1)
    opts = dict(BLOCKSIZE=512, COMPRESS="DEFLATE", OVERVIEW_RESAMPLING=resampling.upper(),
                BIGTIFF="IF_SAFER", OVERVIEWS="IGNORE_EXISTING", OVERVIEW_COUNT=n, LEVEL=1)
    if predictor:
        opts["PREDICTOR"] = "YES"
    with rasterio.Env(GDAL_PAM_ENABLED="NO"):
        rasterio.shutil.copy(str(src), str(tmp_path / "gdal.tif"), driver="COG", **opts)
    assert ours.read_bytes() == (tmp_path / "gdal.tif").read_bytes()
    with rasterio.open(ours) as ds:
        assert ds.overviews(1) == [2, 4, 8][:n] and (ds.read() == mask).all()
    # GDAL threads compressing and computing overviews (the pipeline's setting): same bytes
    threaded = cog_copy(src, tmp_path / "threaded.tif", overview_resampling=resampling,
                        predictor=predictor, level=1, num_threads=3)
    assert threaded.read_bytes() == ours.read_bytes()
