"""Dataset builder: real SpaceNet tile + centre lines, mask-raster labels, splits, bad input."""
from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from shapely.geometry import LineString

from app.service.dataset import DatasetBuildRequest, build_chip_dataset
from app.service.errors import UserError
from gis.chips import chip_offsets, chip_windows, rasterize_lines, split_windows_by_area

CHIP = 256


def _paths(shared_data: Path):
    return (shared_data / "geotiff" / "road_mask_input.tif",
            shared_data / "graphs" / "solaris" / "sample_roads_for_masking.geojson")


@pytest.fixture(scope="module")
def built(shared_data, tmp_path_factory):
    image, lines = _paths(shared_data)
    out = tmp_path_factory.mktemp("ds") / "chips"
    res = build_chip_dataset(DatasetBuildRequest(str(image), str(lines), str(out),
                                                 chip_size_px=CHIP, width_m=6.0))
    return image, lines, out, res


def _mosaic(out: Path, manifest: dict, width: int, height: int) -> np.ndarray:
    """Paste the chip masks back onto the full grid (-1 where no chip was written)."""
    full = np.full((height, width), -1, np.int16)
    for s in manifest["samples"]:
        c, r, w, h = s["window"]
        with rasterio.open(out / s["mask"]) as src:
            full[r:r + h, c:c + w] = src.read(1)[:height - r, :width - c]
    return full


@pytest.mark.slow
def test_masks_follow_the_lines_in_metres(built):
    image, lines, out, res = built
    manifest = json.loads((out / "manifest.json").read_text())
    with rasterio.open(image) as src:
        width, height, transform, crs = src.width, src.height, src.transform, src.crs
    full = _mosaic(out, manifest, width, height)
    covered = full >= 0
    assert set(np.unique(full[covered])) <= {0, 255}
    # distance of every covered pixel centre to the nearest line, in metres (local UTM)
    gdf = gpd.read_file(lines)
    utm = gdf.estimate_utm_crs()
    union = gdf.to_crs(utm).union_all()
    rows, cols = np.nonzero(covered)
    pick = np.random.default_rng(0).choice(rows.size, 4000, replace=False)
    xs, ys = rasterio.transform.xy(transform, rows[pick], cols[pick])
    pts = gpd.GeoSeries(gpd.points_from_xy(xs, ys), crs=crs).to_crs(utm)
    dist = pts.distance(union).to_numpy()
    vals = full[rows[pick], cols[pick]]
    assert np.all(vals[dist < 2.0] == 255), "pixels within 2 m of a line must be road"
    assert np.all(vals[dist > 4.0] == 0), "pixels over 4 m from a line (6 m wide) must be bg"
    assert (dist < 2.0).sum() > 20 and (dist > 4.0).sum() > 1000


def test_chip_images_keep_pixels_and_georeference(built):
    image, _, out, res = built
    with rasterio.open(image) as src:
        for s in res.samples[:3] + res.samples[-2:]:
            c, r, w, h = s["window"]
            with rasterio.open(out / s["image"]) as chip, rasterio.open(out / s["mask"]) as m:
                assert chip.count == src.count and chip.dtypes == src.dtypes
                assert chip.crs == src.crs and m.crs == src.crs
                assert chip.transform.almost_equals(src.window_transform(
                    rasterio.windows.Window(c, r, w, h)))
                assert m.transform.almost_equals(chip.transform) and m.dtypes[0] == "uint8"
                np.testing.assert_array_equal(
                    chip.read(), src.read(window=rasterio.windows.Window(c, r, w, h)))


def test_split_by_area_has_no_leakage(built):
    image, _, out, res = built
    m = json.loads((out / "manifest.json").read_text())
    train = [s["window"] for s in m["samples"] if s["split"] == "train"]
    val = [s["window"] for s in m["samples"] if s["split"] == "val"]
    assert train and val and res.counts == {"train": len(train), "val": len(val)}
    gap = m["split"]["gap_px"]
    assert gap == CHIP  # default: one chip
    assert m["split"]["axis"] == "x"
    first_val = min(v[0] for v in val)
    assert all(t[0] + t[2] + gap <= first_val for t in train)
    # every chip of the validation band is used; chips are never written twice
    names = [s["image"] for s in m["samples"]]
    assert len(names) == len(set(names))
    assert res.skipped_gap > 0


def test_manifest_content_and_review_status(built):
    from segcore.data import build_dataset
    from segcore.errors import DatasetError

    image, lines, out, res = built
    m = json.loads((out / "manifest.json").read_text())
    assert m["source"]["image"] == str(image.resolve())
    assert m["source"]["labels"] == str(lines.resolve())
    assert m["source"]["label_kind"] == "lines" and m["source"]["width_m"] == 6.0
    assert CRS.from_wkt(m["crs"]) == CRS.from_epsg(4326)
    assert m["chip_size_px"] == CHIP and m["overlap_px"] == 0
    for s in m["samples"]:
        assert s["status"] == "unreviewed" and s["split"] in ("train", "val")
        t = Affine(*s["transform"])
        full = Affine(*m["transform"])
        assert t.almost_equals(full * Affine.translation(s["window"][0], s["window"][1]))
        assert (out / s["image"]).is_file() and (out / s["mask"]).is_file()
    # the training reader takes accepted chips only unless told otherwise
    with pytest.raises(DatasetError):
        build_dataset("chips", out, "train", augment="none")
    ds = build_dataset("chips", out, "train", augment="none", statuses=("unreviewed",),
                       norm=None, mean=[0.0], std=[1.0])
    assert len(ds) == res.counts["train"]
    img, mask = ds[0]
    assert img.shape == (1, CHIP, CHIP) and set(np.unique(mask)) <= {0, 1}


def test_skip_empty_and_accepted_status(built, tmp_path):
    image, lines, out, res = built
    empty_before = sum(s["road_fraction"] == 0 for s in res.samples)
    assert empty_before > 0  # the tile has road-free corners at this chip size
    res2 = build_chip_dataset(DatasetBuildRequest(str(image), str(lines), str(tmp_path / "d"),
                                                  chip_size_px=CHIP, skip_empty=True,
                                                  status="accepted"))
    assert res2.skipped_empty == empty_before
    assert len(res2.samples) == len(res.samples) - empty_before
    assert all(s["road_fraction"] > 0 and s["status"] == "accepted" for s in res2.samples)


@pytest.mark.slow
def test_lines_in_another_crs_give_the_same_mask(shared_data, tmp_path):
    image, lines = _paths(shared_data)
    gdf = gpd.read_file(lines)
    utm_file = tmp_path / "lines_utm.gpkg"
    gdf.to_crs(gdf.estimate_utm_crs()).to_file(utm_file)
    kw = dict(chip_size_px=512, val_fraction=0.0)
    a = build_chip_dataset(DatasetBuildRequest(str(image), str(lines), str(tmp_path / "a"), **kw))
    b = build_chip_dataset(DatasetBuildRequest(str(image), str(utm_file), str(tmp_path / "b"),
                                               **kw))
    for sa, sb in zip(a.samples, b.samples):
        assert sa["window"] == sb["window"]
        with rasterio.open(a.out_dir / sa["mask"]) as ma:
            with rasterio.open(b.out_dir / sb["mask"]) as mb:
                diff = ma.read(1) != mb.read(1)
            assert diff.mean() < 0.002  # only edge pixels may flip after the round trip


@pytest.mark.slow
def test_mask_raster_labels_on_the_same_grid(shared_data, tmp_path):
    image = shared_data / "geotiff" / "road_mask_input.tif"
    mask = shared_data / "roads" / "spacenet" / "sample_road_raster_mask.tif"
    res = build_chip_dataset(DatasetBuildRequest(str(image), str(mask), str(tmp_path / "m"),
                                                 chip_size_px=512, overlap_px=64,
                                                 val_fraction=0.0, status="accepted"))
    assert res.label_kind == "mask" and res.counts["val"] == 0
    with rasterio.open(mask) as src:
        ref = src.read(1)
    for s in res.samples:
        c, r, w, h = s["window"]
        with rasterio.open(res.out_dir / s["mask"]) as m:
            np.testing.assert_array_equal(m.read(1), np.where(ref[r:r + h, c:c + w] > 0, 255, 0))


def _write(path: Path, arr: np.ndarray, transform: Affine, crs="EPSG:32633", nodata=None):
    arr = arr if arr.ndim == 3 else arr[None]
    with rasterio.open(path, "w", driver="GTiff", width=arr.shape[2], height=arr.shape[1],
                       count=arr.shape[0], dtype=arr.dtype, crs=crs, transform=transform,
                       nodata=nodata) as dst:
        dst.write(arr)


def test_mask_raster_on_a_coarser_grid_is_resampled(tmp_path):
    rng = np.random.default_rng(1)
    img = rng.integers(1, 255, (3, 64, 64), dtype=np.uint8)
    t = Affine(1.0, 0, 500000.0, 0, -1.0, 5000064.0)
    _write(tmp_path / "img.tif", img, t)
    coarse = (rng.random((32, 32)) > 0.7).astype(np.uint8)  # 0/1 values: > 0 is road
    _write(tmp_path / "mask.tif", coarse, Affine(2.0, 0, 500000.0, 0, -2.0, 5000064.0))
    res = build_chip_dataset(DatasetBuildRequest(str(tmp_path / "img.tif"),
                                                 str(tmp_path / "mask.tif"), str(tmp_path / "o"),
                                                 chip_size_px=32, val_fraction=0.0))
    expect = np.kron(coarse, np.ones((2, 2), np.uint8)) * 255
    assert len(res.samples) == 4
    for s in res.samples:
        c, r, w, h = s["window"]
        with rasterio.open(res.out_dir / s["mask"]) as m:
            np.testing.assert_array_equal(m.read(1), expect[r:r + h, c:c + w])


def test_nodata_chips_are_left_out(tmp_path):
    img = np.full((1, 64, 64), 7, np.uint16)
    img[:, :, 32:] = 0  # right half nodata
    t = Affine(1.0, 0, 500000.0, 0, -1.0, 5000064.0)
    _write(tmp_path / "img.tif", img, t, nodata=0)
    lines = gpd.GeoDataFrame(geometry=[LineString([(500000, 5000032), (500064, 5000032)])],
                             crs="EPSG:32633")
    lines.to_file(tmp_path / "l.geojson")
    res = build_chip_dataset(DatasetBuildRequest(str(tmp_path / "img.tif"),
                                                 str(tmp_path / "l.geojson"), str(tmp_path / "o"),
                                                 chip_size_px=32, val_fraction=0.0))
    assert res.skipped_nodata == 2 and len(res.samples) == 2
    assert all(s["window"][0] == 0 for s in res.samples)


def test_width_from_attribute_in_metres():
    t = Affine(1.0, 0, 0.0, 0, -1.0, 64.0)  # 1 m pixels, metric CRS, row r centre y=63.5-r
    gdf = gpd.GeoDataFrame({"lanes": [2, None]},
                           geometry=[LineString([(0, 48.5), (64, 48.5)]),
                                     LineString([(0, 16), (64, 16)])], crs="EPSG:32633")
    m = rasterize_lines(gdf, crs=CRS.from_epsg(32633), transform=t, width=64, height=64,
                        width_m=4.0, width_attr="lanes", attr_scale_m=3.5)
    rows = np.nonzero(m[:, 32] == 255)[0]
    wide = rows[rows < 32]  # 2 lanes x 3.5 m = 7 m around the centre of row 15
    narrow = rows[rows >= 32]  # no attribute: 4 m around the boundary of rows 47/48
    np.testing.assert_array_equal(wide, np.arange(12, 19))
    np.testing.assert_array_equal(narrow, np.arange(46, 50))
    assert set(np.unique(m)) == {0, 255}


def test_chip_grid_and_split_arithmetic():
    assert chip_offsets(100, 40, 0) == [0, 40, 60]
    assert chip_offsets(30, 40, 0) == [0]
    wins = chip_windows(200, 100, 40, 10)
    sp = split_windows_by_area(wins, 200, 100, 0.25, gap_px=40)
    assert sp.axis == "x" and sp.val and sp.train and sp.gap
    assert len(sp.train) + len(sp.val) + len(sp.gap) == len(wins)
    assert max(w.col_off + w.width for w in sp.train) + 40 <= min(w.col_off for w in sp.val)
    with pytest.raises(ValueError):
        chip_offsets(100, 40, 40)


@pytest.mark.parametrize("case", ["outside", "missing_labels", "missing_image", "exists",
                                  "bad_attr"])
def test_bad_inputs_give_one_line_errors(shared_data, tmp_path, case):
    image, lines = _paths(shared_data)
    kw = {"image": str(image), "labels": str(lines), "out_dir": str(tmp_path / "o"),
          "chip_size_px": 512}
    if case == "outside":
        kw["labels"] = str(shared_data / "graphs" / "solaris" / "sample_roads.geojson")
        word = "inside the image"
    elif case == "missing_labels":
        kw["labels"] = str(tmp_path / "nope.geojson")
        word = "not found"
    elif case == "missing_image":
        kw["image"] = str(tmp_path / "nope.tif")
        word = "not found"
    elif case == "exists":
        (tmp_path / "o").mkdir()
        word = "--overwrite"
    else:
        kw["width_attr"] = "no_such_field"
        word = "no_such_field"
    with pytest.raises(UserError) as ei:
        build_chip_dataset(DatasetBuildRequest(**kw))
    msg = str(ei.value)
    assert "\n" not in msg and word in msg
    named = kw["labels"] if case in ("outside", "missing_labels", "bad_attr") else (
        kw["image"] if case == "missing_image" else kw["out_dir"])
    assert named in msg
    # nothing half-written is left beside the output
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".o.")]
    assert leftovers == []


def test_cli_build_and_error(shared_data, tmp_path, capsys):
    from app.cli import main

    image = shared_data / "geotiff" / "road_mask_input.tif"
    mask = shared_data / "roads" / "spacenet" / "sample_road_raster_mask.tif"
    out = tmp_path / "cli"
    rc = main(["dataset", "build", str(image), "--labels", str(mask), "--out", str(out),
               "--chip-size", "650", "--val-fraction", "0.5", "--gap", "0", "--status",
               "accepted", "-q"])
    assert rc == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["counts"] == {"train": 2, "val": 2}
    rc = main(["dataset", "build", str(image), "--labels", str(mask), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "already exists" in err and len(err.splitlines()) == 1
