"""gis.vectorize, gis.graph, gis.evaluate: synthetic masks with real CRSs, SpaceNet sample."""
from __future__ import annotations

import math

import geopandas as gpd
import networkx as nx
import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Geod
from shapely.geometry import LineString

from gis.errors import CRSError, VectorizeError
from gis.evaluate import buffered_precision_recall
from gis.graph import douglas_peucker, skeleton_to_graph
from gis.vectorize import (
    MetricFrame,
    VectorizeParams,
    mask_to_polygons,
    vectorize_mask,
    vectorize_mask_file,
)

UTM = "EPSG:32633"
PX = 0.5  # metres
T_UTM = Affine(PX, 0, 500000.0, 0, -PX, 5000000.0)


def apply(t: Affine, col: float, row: float) -> tuple:
    """CRS x, y of pixel-grid point (col, row)."""
    return (t.a * col + t.b * row + t.c, t.d * col + t.e * row + t.f)


def hroad(mask: np.ndarray, row: int, c0: int, c1: int, width: int = 10) -> None:
    mask[row - width // 2: row - width // 2 + width, c0:c1] = 1


def vroad(mask: np.ndarray, col: int, r0: int, r1: int, width: int = 10) -> None:
    mask[r0:r1, col - width // 2: col - width // 2 + width] = 1


def degrees(net) -> list:
    return sorted(net.nodes["degree"].tolist())


# --- graph building blocks ------------------------------------------------------------------


def test_skeleton_to_graph_traces_a_t_junction_and_a_loop():
    sk = np.zeros((30, 40), bool)
    sk[5, 2:30] = True  # horizontal
    sk[6:20, 15] = True  # stem of the T
    # a closed ring without any junction or endpoint pixel
    rr = [(22, 30), (22, 31), (22, 32), (23, 33), (24, 33), (25, 32), (25, 31), (25, 30), (24, 29),
          (23, 29)]
    for r, c in rr:
        sk[r, c] = True
    g = skeleton_to_graph(sk)
    comps = list(nx.connected_components(g))
    assert len(comps) == 2
    t = max(comps, key=len)
    degs = sorted(dict(g.degree(t)).values())
    assert degs == [1, 1, 1, 3]
    ring = min(comps, key=len)
    (n,) = ring
    assert g.degree(n) == 2 and g.number_of_edges(n, n) == 1
    # the edge paths cover the T's skeleton; only junction-cluster pixels next to a node are off
    pix = set()
    for _u, _v, d in g.subgraph(t).edges(data=True):
        pix.update(map(tuple, np.rint(d["rc"]).astype(int)))
    tee = {(5, c) for c in range(2, 30)} | {(r, 15) for r in range(6, 20)}
    assert pix <= tee
    hub = next(n for n in t if g.degree(n) == 3)
    assert all(np.hypot(*(np.array(p) - g.nodes[hub]["rc"])) <= 1.5 for p in tee - pix)


def test_close_junctions_are_merged_into_a_crossing():
    from gis.graph import attach_metric, merge_close_junctions, merge_degree2

    sk = np.zeros((40, 40), bool)
    sk[20, 2:38] = True
    sk[2:20, 18] = True  # up from (20, 18)
    sk[21:38, 22] = True  # down from (20, 22): 4 px = 2 m further along
    to_m = lambda rc: np.column_stack([rc[:, 1], -rc[:, 0]]) * 0.5  # noqa: E731
    g = attach_metric(skeleton_to_graph(sk), to_m)
    merge_degree2(g)
    assert sorted(d for _, d in g.degree()) == [1, 1, 1, 1, 3, 3]
    assert merge_close_junctions(g, 1.0) == 0
    assert merge_close_junctions(g, 3.0) == 1
    assert sorted(d for _, d in g.degree()) == [1, 1, 1, 1, 4]
    (hub,) = [n for n in g if g.degree(n) == 4]
    assert np.allclose(g.nodes[hub]["rc"], [20, 20], atol=1.0)
    total = 0.0
    for _u, _v, d in g.edges(data=True):
        at_hub = d["xy"][0] if d["start"] == hub else d["xy"][-1]
        assert np.allclose(at_hub, g.nodes[hub]["xy"])
        assert d["length_m"] == pytest.approx(
            float(np.hypot(*np.diff(d["xy"], axis=0).T).sum()))
        total += d["length_m"]
    assert total == pytest.approx(0.5 * (35 + 18 + 17 + 2), abs=2.0)


def test_douglas_peucker_keeps_corners_and_ends():
    xy = np.array([[0, 0], [1, 0.1], [2, 0], [3, 0], [3, 1], [3, 2.05], [3, 3]], float)
    keep = douglas_peucker(xy, 0.2)
    assert keep.tolist() == [0, 3, 6]
    assert douglas_peucker(xy, 0).tolist() == list(range(7))


def test_metric_frame_geographic_pixel_size_matches_geodesic():
    t = Affine(2.7e-6, 0, -115.2338, 0, -2.7e-6, 36.1423)
    f = MetricFrame("EPSG:4326", t, (1300, 1300))
    geod = Geod(ellps="WGS84")
    lon, lat = apply(t, 650, 650)
    _, _, dx = geod.inv(lon, lat, lon + 2.7e-6, lat)
    _, _, dy = geod.inv(lon, lat, lon, lat - 2.7e-6)
    assert f.pixel_size_m[0] == pytest.approx(dx, rel=2e-3)
    assert f.pixel_size_m[1] == pytest.approx(dy, rel=2e-3)
    assert f.metric_crs.to_epsg() == 32611


def test_metric_frame_projected_feet_and_frozen_params():
    import dataclasses

    f = MetricFrame("EPSG:2263", Affine(2.0, 0, 1_000_000.0, 0, -2.0, 200_000.0), (10, 10))
    assert f.pixel_size_m == pytest.approx((2 * 0.3048006, 2 * 0.3048006), rel=1e-5)
    assert f.metric_crs.to_epsg() == 2263
    with pytest.raises(dataclasses.FrozenInstanceError):
        VectorizeParams().gap_m = 1.0  # type: ignore[misc]


def test_missing_crs_and_bad_shapes_raise():
    m = np.zeros((20, 20), bool)
    with pytest.raises(CRSError):
        vectorize_mask(m, T_UTM, None)
    with pytest.raises(VectorizeError):
        vectorize_mask(np.zeros((2, 3, 4)), T_UTM, UTM)
    with pytest.raises(VectorizeError):
        vectorize_mask(m, T_UTM, UTM, probability=np.zeros((10, 10), np.float32))
    with pytest.raises(ValueError):
        VectorizeParams(spur_length_m=-1)


# --- synthetic masks --------------------------------------------------------------------------


def test_straight_road_length_width_and_confidence():
    m = np.zeros((120, 200), np.uint8)
    hroad(m, 60, 0, 200, width=10)  # 5 m wide, crosses the whole raster (100 m)
    prob = np.where(m > 0, 0.8, 0.1).astype(np.float32)
    net = vectorize_mask(m, T_UTM, UTM, probability=prob)
    assert len(net.edges) == 1 and degrees(net) == [1, 1]
    e = net.edges.iloc[0]
    # the line reaches both raster edges: 200 px minus half a pixel at each end
    assert e.length_m == pytest.approx(99.5, rel=0.02)
    assert e.geometry.length == pytest.approx(e.length_m, rel=1e-6)  # projected metres
    assert e.width_m == pytest.approx(5.0, rel=0.1)
    assert e.confidence == pytest.approx(0.8, abs=1e-6)
    assert e.bridged_m == 0
    # centre line at the road's middle row (row 60 edge between pixel rows 59/60 -> y)
    y_mid = (apply(T_UTM, 0, 60))[1]
    ys = np.array(e.geometry.coords)[:, 1]
    assert np.all(np.abs(ys - y_mid) <= PX)
    assert net.edges.crs.to_epsg() == 32633 and net.nodes.crs.to_epsg() == 32633
    s = net.summary()
    assert s["edges"] == 1 and s["nodes"] == 2 and s["components"] == 1
    assert s["total_km"] == pytest.approx(e.length_m / 1000)
    # no probabilities -> NaN confidence
    net2 = vectorize_mask(m, T_UTM, UTM)
    assert math.isnan(net2.edges.iloc[0].confidence)


def test_uint8_probability_uses_mosaic_encoding():
    m = np.zeros((60, 100), np.uint8)
    hroad(m, 30, 0, 100)
    prob = np.where(m > 0, 127, 0).astype(np.uint8)  # 127 / 254 = 0.5
    net = vectorize_mask(m, T_UTM, UTM, probability=prob)
    assert net.edges.iloc[0].confidence == pytest.approx(0.5, abs=1e-6)


def test_geographic_road_length_is_geodesic():
    lat0 = 45.0
    t = Affine(5e-6, 0, 10.0, 0, -5e-6, lat0)
    m = np.zeros((100, 300), np.uint8)
    hroad(m, 50, 0, 300, width=12)
    net = vectorize_mask(m, t, "EPSG:4326")
    assert len(net.edges) == 1
    line = net.edges.geometry.iloc[0]
    (x0, y0), (x1, y1) = line.coords[0], line.coords[-1]
    expected = Geod(ellps="WGS84").inv(x0, y0, x1, y1)[2]
    assert net.edges.length_m.iloc[0] == pytest.approx(expected, rel=2e-3)
    # and it spans the raster: 299.5 pixels of 5e-6 deg
    assert (x1 - x0) == pytest.approx(299 * 5e-6, abs=2e-6)
    px_x = Geod(ellps="WGS84").inv(10.0, lat0, 10.0 + 5e-6, lat0)[2]
    px_y = Geod(ellps="WGS84").inv(10.0, lat0, 10.0, lat0 - 5e-6)[2]
    assert px_x < px_y  # anisotropic metres at 45 deg
    assert net.edges.width_m.iloc[0] == pytest.approx(12 * px_y, rel=0.1)


def test_cross_gives_one_degree_four_junction():
    m = np.zeros((200, 200), np.uint8)
    hroad(m, 100, 0, 200)
    vroad(m, 100, 0, 200)
    net = vectorize_mask(m, T_UTM, UTM)
    assert degrees(net) == [1, 1, 1, 1, 4]
    assert len(net.edges) == 4
    assert net.edges.length_m.sum() == pytest.approx(2 * 99.5, rel=0.03)
    hub = net.nodes[net.nodes.degree == 4].geometry.iloc[0]
    centre = apply(T_UTM, 100, 100)
    assert hub.distance(gpd.points_from_xy([centre[0]], [centre[1]])[0]) < 1.5
    # topology: all four edges share the hub coordinate exactly
    assert sum(hub.equals_exact(type(hub)(g.coords[0]), 0) or
               hub.equals_exact(type(hub)(g.coords[-1]), 0) for g in net.edges.geometry) == 4


def test_l_shape_is_one_edge_with_a_corner():
    m = np.zeros((200, 200), np.uint8)
    hroad(m, 40, 40, 170)  # 65 m leg
    vroad(m, 165, 35, 180)  # down the right side
    net = vectorize_mask(m, T_UTM, UTM)
    assert len(net.edges) == 1 and degrees(net) == [1, 1]
    line = net.edges.geometry.iloc[0]
    # simplified: few vertices (the corner kept), about the two legs long
    assert 3 <= len(line.coords) <= 8
    assert net.edges.length_m.iloc[0] == pytest.approx((165 - 45 + 175 - 40) * PX, rel=0.08)


def test_spur_is_pruned_and_long_branch_kept():
    m = np.zeros((160, 240), np.uint8)
    hroad(m, 60, 0, 240)
    vroad(m, 60, 64, 76, width=6)  # 6 px (3 m) stub: ~4 m beyond the road edge
    vroad(m, 180, 64, 150, width=10)  # long branch (~40 m)
    net = vectorize_mask(m, T_UTM, UTM, params=VectorizeParams(spur_length_m=10))
    assert degrees(net) == [1, 1, 1, 3]
    assert len(net.edges) == 3
    # without pruning the stub stays as its own edge
    net0 = vectorize_mask(m, T_UTM, UTM, params=VectorizeParams(spur_length_m=0))
    assert len(net0.edges) == 5


def test_collinear_gap_is_bridged_but_far_or_sideways_ends_are_not():
    m = np.zeros((120, 400), np.uint8)
    hroad(m, 60, 0, 190)
    hroad(m, 60, 200, 400)  # 10 px = 5 m gap in the mask
    net = vectorize_mask(m, T_UTM, UTM)
    assert net.summary()["components"] == 1
    assert len(net.edges) == 1
    gap = net.edges.bridged_m.iloc[0]
    assert 5.0 <= gap <= 12.0  # mask gap plus the two retracted half-widths
    assert net.edges.length_m.iloc[0] == pytest.approx(199.5, rel=0.02)

    # a 40 m gap exceeds collinear_gap_m = 30: two components
    m2 = np.zeros((120, 400), np.uint8)
    hroad(m2, 60, 0, 150)
    hroad(m2, 60, 230, 400)
    assert vectorize_mask(m2, T_UTM, UTM).summary()["components"] == 2

    # an end 12 m from a parallel road, pointing along it (not towards it): not joined
    m3 = np.zeros((160, 400), np.uint8)
    hroad(m3, 40, 0, 400)
    hroad(m3, 64, 100, 300, width=8)  # 24 px = 12 m below, ends point sideways to road 1
    net3 = vectorize_mask(m3, T_UTM, UTM, params=VectorizeParams(gap_m=6, collinear_gap_m=30))
    assert net3.summary()["components"] == 2
    # an end 8 m short of a crossing road, pointing at it: joined as a T
    m4 = np.zeros((200, 200), np.uint8)
    vroad(m4, 100, 0, 200)
    hroad(m4, 100, 0, 79)  # ends 16 px (8 m) left of the vertical road's edge at col 95
    net4 = vectorize_mask(m4, T_UTM, UTM)
    assert net4.summary()["components"] == 1
    assert degrees(net4) == [1, 1, 1, 3]


def test_small_blob_removed_and_small_hole_filled():
    m = np.zeros((120, 200), np.uint8)
    hroad(m, 60, 0, 200)
    m[60, 100] = 0  # one-pixel hole inside the road: would make a loop
    m[10:16, 10:16] = 1  # 3 m x 3 m blob (9 m2 < 20 m2): removed by cleaning
    m[10:24, 150:164] = 1  # 7 m x 7 m blob: survives cleaning, centre line < 20 m: removed
    net = vectorize_mask(m, T_UTM, UTM)
    assert len(net.edges) == 1 and degrees(net) == [1, 1]
    assert net.summary()["components"] == 1
    kept = vectorize_mask(m, T_UTM, UTM, params=VectorizeParams(min_component_length_m=0,
                                                                  min_object_area_m2=0))
    assert kept.summary()["components"] >= 2


def test_empty_mask_gives_empty_layers_with_columns():
    net = vectorize_mask(np.zeros((50, 50), bool), T_UTM, UTM)
    assert len(net.edges) == 0 and len(net.nodes) == 0
    for col in ("u", "v", "length_m", "width_m", "confidence", "component"):
        assert col in net.edges.columns
    assert net.summary() == {"total_km": 0.0, "edges": 0, "nodes": 0, "components": 0}


def test_progress_and_cancel():
    from gis.errors import CancelledError

    m = np.zeros((60, 100), np.uint8)
    hroad(m, 30, 0, 100)
    seen = []
    vectorize_mask(m, T_UTM, UTM, on_progress=lambda d, t, s: seen.append((d, t, s)))
    assert [d for d, _, _ in seen] == list(range(1, len(seen) + 1)) and seen[-1][0] == seen[-1][1]
    with pytest.raises(CancelledError):
        vectorize_mask(m, T_UTM, UTM, should_cancel=lambda: True)


def test_graph_matches_tables():
    m = np.zeros((200, 200), np.uint8)
    hroad(m, 100, 0, 200)
    vroad(m, 60, 100, 200)
    net = vectorize_mask(m, T_UTM, UTM)
    g = net.graph
    assert g.number_of_nodes() == len(net.nodes) and g.number_of_edges() == len(net.edges)
    assert dict(g.degree()) == dict(zip(net.nodes.node_id, net.nodes.degree))
    for _, e in net.edges.iterrows():
        pu = net.nodes.set_index("node_id").geometry[e.u]
        assert LineString(e.geometry).coords[0] == pu.coords[0] or \
            LineString(e.geometry).coords[-1] == pu.coords[0]


def test_mask_to_polygons_area():
    m = np.zeros((100, 100), np.uint8)
    hroad(m, 50, 0, 100, width=10)
    m[20:30, 20:30] = 1
    polys = mask_to_polygons(m, T_UTM, UTM)
    assert len(polys) == 2
    assert sorted(polys.area_m2.round(3)) == [25.0, 250.0]
    assert polys.crs.to_epsg() == 32633 and polys.geom_type.eq("Polygon").all()


def test_vectorize_mask_file_from_mask_and_from_probability(tmp_path):
    m = np.zeros((80, 120), np.uint8)
    hroad(m, 40, 0, 120)
    profile = dict(driver="GTiff", width=120, height=80, count=1, crs=UTM, transform=T_UTM)
    mpath = tmp_path / "mask.tif"
    with rasterio.open(mpath, "w", dtype="uint8", nodata=255, **profile) as ds:
        out = m.copy()
        out[:, :5] = 255  # nodata stripe is not road
        ds.write(out, 1)
    ppath = tmp_path / "prob.tif"
    with rasterio.open(ppath, "w", dtype="float32", **profile) as ds:
        ds.write(np.where(m > 0, 0.9, 0.2).astype(np.float32), 1)
    a = vectorize_mask_file(mpath, ppath, polygons=True)
    assert len(a.edges) == 1 and a.edges.confidence.iloc[0] == pytest.approx(0.9)
    assert a.edges.length_m.iloc[0] == pytest.approx((120 - 5 - 0.5) * PX, rel=0.08)
    assert a.polygons is not None and len(a.polygons) == 1
    b = vectorize_mask_file(None, ppath)
    assert len(b.edges) == 1 and b.edges.length_m.iloc[0] == pytest.approx(59.75, rel=0.03)
    with pytest.raises(OSError):
        vectorize_mask_file(tmp_path / "missing.tif")


def test_buffered_precision_recall_by_hand():
    ref = gpd.GeoSeries([LineString([(0, 0), (100, 0)])], crs=UTM)
    pred = gpd.GeoSeries([LineString([(0, 1), (50, 1)]), LineString([(0, 20), (50, 20)])], crs=UTM)
    s = buffered_precision_recall(pred, ref, 4.0)
    assert s.precision == pytest.approx(0.5)
    assert s.recall == pytest.approx((50 + math.sqrt(4**2 - 1)) / 100, rel=1e-3)  # round cap
    assert s.pred_length_m == pytest.approx(100) and s.ref_length_m == pytest.approx(100)
    assert buffered_precision_recall(ref, ref, 1.0).f1 == pytest.approx(1.0)


# --- real data ---------------------------------------------------------------------------------


def reference_topology(ref: gpd.GeoDataFrame, metric_crs: str) -> tuple:
    """(connected networks, T-junctions) of reference lines: lines touching within 1 m are
    connected; a line end touching another line's interior is a T-junction."""
    refm = ref.to_crs(metric_crs).geometry.tolist()
    rg = nx.Graph()
    rg.add_nodes_from(range(len(refm)))
    rg.add_edges_from((i, j) for i in range(len(refm)) for j in range(i + 1, len(refm))
                      if refm[i].distance(refm[j]) < 1.0)
    tees = 0
    for i, li in enumerate(refm):
        for end in li.boundary.geoms:
            if any(end.distance(lj) < 1.0 and end.distance(lj.boundary) > 1.0
                   for j, lj in enumerate(refm) if j != i):
                tees += 1
    return nx.number_connected_components(rg), tees


@pytest.fixture(scope="module")
def spacenet(shared_data):
    mask_tif = shared_data / "roads/spacenet/sample_road_raster_mask.tif"
    ref = gpd.read_file(shared_data / "graphs/solaris/sample_roads_for_masking.geojson")
    with rasterio.open(mask_tif) as ds:
        return mask_tif, ds.read(1) > 0, ds.transform, ds.crs, ref


@pytest.mark.slow
def test_spacenet_mask_gives_back_its_centre_lines(spacenet):
    """The sample mask is the nine reference centre lines buffered by ~2 m (checked: every mask
    pixel lies within 8.3 px of a line and every line pixel is in the mask), so the extracted lines
    must match them closely and with the same topology."""
    mask_tif, _, _, _, ref = spacenet
    net = vectorize_mask_file(mask_tif)
    assert net.edges.crs.to_epsg() == 4326

    s4 = buffered_precision_recall(net.edges, ref, 4.0)
    assert s4.metric_crs == "EPSG:32611"
    assert s4.precision > 0.98 and s4.recall > 0.98
    assert abs(s4.pred_length_m - s4.ref_length_m) / s4.ref_length_m < 0.03
    s1 = buffered_precision_recall(net.edges, ref, 1.0)  # tight: centre lines, not road edges
    assert s1.precision > 0.95 and s1.recall > 0.95

    comps, tees = reference_topology(ref, s4.metric_crs)
    assert net.summary()["components"] == comps
    assert int((net.nodes.degree >= 3).sum()) == tees
    assert net.edges.bridged_m.sum() == 0

    # widths: mask area / reference length is the mask's mean width
    with rasterio.open(mask_tif) as ds:
        a = ds.read(1) > 0
        frame = MetricFrame(ds.crs, ds.transform, a.shape)
    mean_width = a.sum() * frame.pixel_area_m2 / s4.ref_length_m
    assert net.edges.width_m.median() == pytest.approx(mean_width, rel=0.1)

    # road-surface polygons: one per connected network, same area as the mask (in UTM)
    polys = mask_to_polygons(a, frame.transform, frame.crs)
    assert len(polys) == comps and polys.crs.to_epsg() == 4326
    area = a.sum() * frame.pixel_area_m2
    assert polys.to_crs(s4.metric_crs).area.sum() == pytest.approx(area, rel=0.01)
    assert polys.area_m2.sum() == pytest.approx(area, rel=0.01)


def test_spacenet_mask_with_punched_gaps_and_noise_is_repaired(spacenet):
    """Cut every road of the real mask with ~3.6 m gaps and sprinkle small blobs: bridging and
    clean-up must give the same network back."""
    _, mask, transform, crs, ref = spacenet
    broken = mask.copy()
    for c in (300, 700, 1100):
        broken[:, c:c + 15] = False  # 15 px x 0.243 m
    for r in (400, 1000):
        broken[r:r + 12, :] = False  # 12 px x 0.300 m
    for r, c in [(100, 100), (600, 900), (900, 300), (1200, 1200), (250, 1000)]:
        broken[r:r + 6, c:c + 5] = True  # ~2 m2 specks
    from scipy import ndimage

    _, cuts = ndimage.label(mask & ~broken, structure=np.ones((3, 3)))
    assert cuts >= 8
    net = vectorize_mask(broken, transform, crs)
    comps, tees = reference_topology(ref, "EPSG:32611")
    assert net.summary()["components"] == comps
    assert int((net.nodes.degree >= 3).sum()) == tees
    assert net.edges.bridged_m.sum() > cuts * 3.6  # every cut was bridged
    s1 = buffered_precision_recall(net.edges, ref, 1.0)
    assert s1.precision > 0.95 and s1.recall > 0.95
    assert abs(s1.pred_length_m - s1.ref_length_m) / s1.ref_length_m < 0.03


def test_ring_road_is_one_closed_edge():
    yy, xx = np.mgrid[:200, :200]
    r = np.hypot(yy - 99.5, xx - 99.5)
    m = (r >= 60) & (r < 70)  # ring road 5 m wide, centre radius 65 px = 32.5 m
    net = vectorize_mask(m, T_UTM, UTM)
    assert len(net.edges) == 1 and degrees(net) == [2]
    line = net.edges.geometry.iloc[0]
    assert line.is_ring
    assert net.edges.length_m.iloc[0] == pytest.approx(2 * math.pi * 64.5 * PX, rel=0.03)
    assert net.edges.width_m.iloc[0] == pytest.approx(5.0, rel=0.1)


@pytest.mark.slow
def test_vegas_ground_truth_round_trip_junctions(shared_data):
    """SpaceNet Vegas img0: its 38 ground-truth centre lines (long, not split at junctions) buffered
    by 2 m and burned on the tile's own grid; vectorizing must give back the lines and put a node
    at the reference junctions (found by noding the snapped reference lines)."""
    from collections import Counter

    from rasterio import features
    from scipy.spatial import cKDTree
    from shapely import snap, union_all

    tif = shared_data / "geotiff/RGB-PanSharpen_AOI_2_Vegas_img0.tif"
    ref = gpd.read_file(shared_data / "graphs/apls_sample/gt_json_prop_wkt/ground_truth_randomized"
                        "/AOI_2_Vegas_img0.geojson")
    with rasterio.open(tif) as ds:
        transform, crs, shape = ds.transform, ds.crs, (ds.height, ds.width)
    utm = ref.estimate_utm_crs()
    zone = ref.to_crs(utm).buffer(2.0).to_crs(crs)
    mask = features.rasterize([(g, 1) for g in zone], out_shape=shape, transform=transform) > 0
    net = vectorize_mask(mask, transform, crs)

    s1 = buffered_precision_recall(net.edges, ref, 1.0)
    assert s1.precision > 0.97 and s1.recall > 0.97
    assert abs(s1.pred_length_m - s1.ref_length_m) / s1.ref_length_m < 0.02

    lines = list(ref.to_crs(utm).geometry)
    snapped = [snap(g, union_all([h for j, h in enumerate(lines) if j != i]), 1.0)
               for i, g in enumerate(lines)]
    ends = Counter()
    for part in union_all(snapped).geoms:
        for pt in (part.coords[0], part.coords[-1]):
            ends[(round(pt[0], 2), round(pt[1], 2))] += 1
    ref_junctions = np.array([p for p, k in ends.items() if k >= 3])
    ours = np.array([(p.x, p.y) for p in net.nodes[net.nodes.degree >= 3].to_crs(utm).geometry])
    assert len(ref_junctions) > 40
    d_ref, _ = cKDTree(ours).query(ref_junctions)
    d_ours, _ = cKDTree(ref_junctions).query(ours)
    assert (d_ref < 2.0).mean() > 0.9
    assert (d_ours < 2.0).mean() > 0.85
