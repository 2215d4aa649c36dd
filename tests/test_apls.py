"""APLS (gis.evaluate.apls) against the CosmiQ reference values on the SpaceNet/OSM sample
graphs, on synthetic networks whose effect on the score is known, and ``roadseg eval --lines``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import pytest
from shapely.geometry import LineString, MultiLineString

from gis.errors import CRSError
from gis.evaluate import APLSScore, apls, buffered_precision_recall

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = "graphs/apls_sample/gt_json_prop_json/AOI_2_Vegas_Train"
UTM = "EPSG:32611"  # Las Vegas, metres

# CosmiQ apls with the SpaceNet 3 settings (50 m control points, 4 m snapping), issue 14
REFERENCE = {99: 0.781, 990: 0.612, 991: 0.764, 995: 0.727, 997: 0.575, 998: 0.660, 999: 0.425}


def _pair(shared_data: Path, n: int):
    gt = shared_data / SAMPLE / "spacenetroads" / f"AOI_2_Vegas_img{n}.geojson"
    prop = shared_data / SAMPLE / "osm" / f"AOI_2_Vegas_img{n}.geojson"
    if not gt.is_file() or not prop.is_file():
        pytest.skip(f"APLS sample graphs not found under {shared_data / SAMPLE}")
    return gt, prop


@pytest.mark.parametrize("n", sorted(REFERENCE))
def test_matches_the_cosmiq_reference_on_the_spacenet_sample(shared_data, n):
    gt, prop = _pair(shared_data, n)
    s = apls(gpd.read_file(prop), gpd.read_file(gt))
    assert s.apls == pytest.approx(REFERENCE[n], abs=0.03)
    assert 0 < s.apls_gt_onto_prop <= 1 and 0 < s.apls_prop_onto_gt <= 1
    h = 2 * s.apls_gt_onto_prop * s.apls_prop_onto_gt / (s.apls_gt_onto_prop + s.apls_prop_onto_gt)
    assert s.apls == pytest.approx(h)
    assert 0 < s.gt_snapped <= s.gt_control_points and 0 < s.prop_snapped <= s.prop_control_points
    assert s.metric_crs == UTM


def test_identical_real_graphs_score_one(shared_data):
    gt, _ = _pair(shared_data, 998)
    lines = gpd.read_file(gt)
    s = apls(lines, lines)
    assert s.apls == pytest.approx(1.0) and s.apls_gt_onto_prop == pytest.approx(1.0)
    assert s.gt_snapped == s.gt_control_points and s.gt_pairs == s.prop_pairs > 0


def _grid(cut: bool = False, gap_m: float = 20.0) -> gpd.GeoSeries:
    """Three horizontal 600 m streets 200 m apart and four vertical ones 200 m apart, every
    crossing a shared vertex; ``cut`` opens a ``gap_m`` gap in the middle street."""
    x0, y0 = 660000.0, 4010000.0
    xs = [x0 + 200 * i for i in range(4)]
    ys = [y0 + 200 * j for j in range(3)]
    lines = []
    for j, y in enumerate(ys):
        if cut and j == 1:
            mid = x0 + 300
            lines.append(LineString([(x, y) for x in xs[:2]] + [(mid - gap_m / 2, y)]))
            lines.append(LineString([(mid + gap_m / 2, y)] + [(x, y) for x in xs[2:]]))
        else:
            lines.append(LineString([(x, y) for x in xs]))
    for x in xs:
        lines.append(LineString([(x, y) for y in ys]))
    return gpd.GeoSeries(lines, crs=UTM)


def test_synthetic_identical_graphs_score_one_and_count_control_points():
    g = _grid()
    s = apls(g, g)
    assert isinstance(s, APLSScore)
    assert (s.apls, s.apls_gt_onto_prop, s.apls_prop_onto_gt) == pytest.approx((1, 1, 1))
    # 12 crossings and corners, and 3 points inside each of the 17 200 m block sides
    assert s.gt_control_points == s.prop_control_points == 12 + 17 * 3
    assert s.gt_pairs == 63 * 62  # every ordered pair: the grid is connected


def test_a_cut_road_scores_lower_than_the_intact_one():
    gt = _grid()
    cut = apls(_grid(cut=True), gt)
    assert cut.apls < 0.99 and cut.apls_gt_onto_prop < 1 and cut.apls_prop_onto_gt < 1
    # both halves see it: gt paths through the gap get longer or vanish in the proposal
    assert cut.gt_snapped < cut.gt_control_points
    # the buffered centre-line score barely sees the gap that APLS penalises
    assert buffered_precision_recall(_grid(cut=True), gt, 4.0).recall > 0.99


def test_empty_proposal_or_reference_scores_zero():
    gt = _grid()
    empty = gpd.GeoSeries([], crs=UTM)
    s = apls(empty, gt)
    assert (s.apls, s.apls_gt_onto_prop, s.apls_prop_onto_gt) == (0.0, 0.0, 0.0)
    assert s.prop_control_points == 0 and s.gt_snapped == 0
    assert apls(gt, empty).apls == 0.0


def test_far_away_proposal_scores_zero():
    gt = _grid()
    s = apls(gt.translate(5000, 0), gt)
    assert s.apls == 0.0 and s.gt_snapped == 0 and s.prop_snapped == 0


def test_lon_lat_input_is_measured_in_metres():
    gt, prop = _grid(), _grid(cut=True)
    metric = apls(prop, gt)
    geographic = apls(prop.to_crs("EPSG:4326"), gt.to_crs("EPSG:4326"))
    assert geographic.metric_crs == UTM
    assert geographic.apls == pytest.approx(metric.apls, abs=1e-6)
    assert geographic.gt_length_m == pytest.approx(metric.gt_length_m, rel=1e-6)


def test_lines_join_only_at_shared_vertices_and_multilines_are_split():
    joined = gpd.GeoSeries([LineString([(0, 100), (100, 100), (200, 100)]),
                            LineString([(100, 0), (100, 100), (100, 200)])], crs=UTM)
    # a bridge: the same shape, the roads cross without a shared vertex
    bridge = gpd.GeoSeries([LineString([(0, 100), (200, 100)]),
                            LineString([(100, 0), (100, 200)])], crs=UTM)
    assert apls(bridge, joined).apls < 0.9
    multi = gpd.GeoSeries([MultiLineString([[(0, 100), (100, 100), (200, 100)],
                                            [(100, 0), (100, 100), (100, 200)]])], crs=UTM)
    assert apls(multi, joined).apls == pytest.approx(1.0)


def test_missing_crs_is_an_error():
    with pytest.raises(CRSError):
        apls(gpd.GeoSeries([LineString([(0, 0), (100, 0)])]), _grid())


# ------------------------------------------------------------------------------ roadseg eval
def _roadseg(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "app.cli", *args], check=False,
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def test_cli_eval_lines_prints_apls_and_buffered_scores(shared_data, tmp_path):
    gt, prop = _pair(shared_data, 995)
    # the proposal as a GeoPackage with an edges layer next to a nodes layer, like extraction
    lines = gpd.read_file(prop)[["geometry"]]
    gpkg = tmp_path / "roads.gpkg"
    lines.to_file(gpkg, layer="edges")
    gpd.GeoDataFrame(geometry=lines.geometry.representative_point(), crs=lines.crs).to_file(
        gpkg, layer="nodes")
    out = tmp_path / "eval.json"
    r = _roadseg("eval", "--lines", str(gpkg), "--reference", str(gt), "-o", str(out))
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    assert report["apls"]["apls"] == pytest.approx(REFERENCE[995], abs=0.03)
    assert f"APLS {report['apls']['apls']:.4f}" in r.stdout
    assert f"precision {report['buffered']['precision']:.4f}" in r.stdout
    assert 0 < report["buffered"]["recall"] <= 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.json", "roads.gpkg"]

    r = _roadseg("eval", "--lines", str(gpkg), "--reference", str(gt), "-o", str(out))
    assert r.returncode == 2 and "already exists" in r.stderr and "Traceback" not in r.stderr


def test_cli_eval_lines_bad_input_is_one_line_error(shared_data, tmp_path):
    gt, _ = _pair(shared_data, 99)
    missing = tmp_path / "missing.gpkg"
    r = _roadseg("eval", "--lines", str(missing), "--reference", str(gt))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert str(missing) in r.stderr and "not found" in r.stderr
    points = tmp_path / "points.geojson"
    gpd.GeoDataFrame(geometry=gpd.read_file(gt).geometry.representative_point()).to_file(points)
    r = _roadseg("eval", "--lines", str(points), "--reference", str(gt))
    assert r.returncode == 2 and "expected line geometries" in r.stderr
    assert "Traceback" not in r.stderr
    r = _roadseg("eval", "--lines", str(gt))
    assert r.returncode == 2 and "--reference" in r.stderr


def test_read_lines_picks_the_edges_layer_or_asks_for_one(tmp_path):
    from app.service.errors import UserError
    from app.service.line_eval import read_lines

    g = gpd.GeoDataFrame(geometry=_grid(), crs=UTM)
    two = tmp_path / "two.gpkg"
    g.to_file(two, layer="streets")
    g.to_file(two, layer="roads")
    with pytest.raises(UserError, match="several layers.*streets.*roads|several layers.*roads"):
        read_lines(str(two))
    assert len(read_lines(str(two), layer="roads")) == len(g)
    with pytest.raises(UserError, match="no layer 'edges'"):
        read_lines(str(two), layer="edges")
    g.to_file(two, layer="edges")
    assert len(read_lines(str(two))) == len(g)
    nocrs = tmp_path / "nocrs.gpkg"  # (a GeoJSON without CRS reads as lon/lat)
    with pytest.warns(UserWarning, match="crs"):
        gpd.GeoDataFrame(geometry=list(_grid())).to_file(nocrs)
    with pytest.raises(UserError, match="no coordinate reference system"):
        read_lines(str(nocrs))
