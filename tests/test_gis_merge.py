"""gis.merge: ownership cores tile the union; roads crossing seams come out as single lines,
overlaps are not duplicated, attributes are carried over, CRSs are handled."""
from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
from shapely.affinity import translate
from shapely.geometry import LineString, box
from shapely.ops import unary_union

from gis.merge import NetworkPart, merge_networks, ownership_cores

CRS = "EPSG:32611"
X0, Y0 = 600000.0, 4000000.0

# a road network on a 400 m x 400 m area cut into four quadrants: a horizontal and a vertical
# road crossing near the middle (4 edges from the junction), a diagonal road and a curved one
# crossing the cuts obliquely
ROADS = [
    LineString([(X0 + 10, Y0 + 150), (X0 + 250, Y0 + 150)]),
    LineString([(X0 + 250, Y0 + 150), (X0 + 390, Y0 + 150)]),
    LineString([(X0 + 250, Y0 + 10), (X0 + 250, Y0 + 150)]),
    LineString([(X0 + 250, Y0 + 150), (X0 + 250, Y0 + 390)]),
    LineString([(X0 + 20, Y0 + 30), (X0 + 370, Y0 + 350)]),
    LineString([(X0 + 30 + 3 * t, Y0 + 380 - 0.02 * (3 * t - 170) ** 2 / 4)
                for t in range(110)]),
]


def _quadrants(overlap: float):
    half = 200.0
    fps = []
    for r in range(2):
        for c in range(2):
            fps.append(box(X0 + c * half - (overlap / 2 if c else 0),
                           Y0 + r * half - (overlap / 2 if r else 0),
                           X0 + (c + 1) * half + (0 if c else overlap / 2),
                           Y0 + (r + 1) * half + (0 if r else overlap / 2)))
    return fps


def _part(fp, k: int, shift: float, crs=CRS) -> NetworkPart:
    """What a scene would give: the roads inside its footprint, shifted a little (each scene's
    model places the centre line slightly differently), split at the junction like a graph."""
    lines = []
    for road in ROADS:
        g = translate(road, shift, -shift).intersection(fp)
        for ln in getattr(g, "geoms", [g]):
            if ln.geom_type == "LineString" and ln.length > 0:
                lines.append(ln)
    gdf = gpd.GeoDataFrame({"width_m": np.full(len(lines), 6.0 + k),
                            "confidence": np.full(len(lines), 0.5 + 0.1 * k),
                            "bridged_m": np.zeros(len(lines))}, geometry=lines, crs=CRS)
    return NetworkPart(gdf.to_crs(crs), fp, name=f"s{k}", footprint_crs=CRS)


def test_cores_tile_the_union_without_overlap():
    fps = _quadrants(60.0)
    cores = ownership_cores(fps)
    union = unary_union(fps)
    assert unary_union(cores).symmetric_difference(union).area < 1e-6
    for i in range(4):
        for j in range(i + 1, 4):
            assert cores[i].intersection(cores[j]).area < 1e-6
    # seams are the middle lines of the overlaps: the core of the lower-left scene ends at 200 m
    assert cores[0].bounds == pytest.approx((X0, Y0, X0 + 200, Y0 + 200))
    # identical footprints: the first one owns everything
    same = ownership_cores([fps[0], fps[0]])
    assert same[0].area == pytest.approx(fps[0].area) and same[1].is_empty


@pytest.mark.parametrize("overlap", [0.0, 60.0])
def test_merged_roads_are_single_lines_without_duplicates(overlap):
    fps = _quadrants(overlap)
    parts = [_part(fp, k, shift=0.4 * (k % 2) - 0.3 * (k // 2)) for k, fp in enumerate(fps)]
    merged = merge_networks(parts, snap_m=3.0)
    e = merged.edges
    truth = sum(r.length for r in ROADS)
    assert e["length_m"].sum() == pytest.approx(truth, rel=0.01)
    # every seam crossing was joined: no dangling end on a seam, no degree-2 node left
    assert merged.stats["dangling_seam_ends"] == 0 and merged.stats["joined_pairs"] > 0
    assert not (merged.nodes["degree"] == 2).any()
    # the horizontal road west of the junction is one edge spanning both western scenes' cut
    west = e[e.geometry.apply(lambda g: g.bounds[0] < X0 + 15 and abs(g.bounds[1] - (Y0 + 150))
                              < 2 and abs(g.bounds[3] - (Y0 + 150)) < 2)]
    assert len(west) == 1 and west.iloc[0]["length_m"] == pytest.approx(240, abs=1.5)
    # the diagonal crosses both cuts and the junction-free area: one line from end to end
    diag = e[e.geometry.apply(lambda g: g.hausdorff_distance(ROADS[4]) < 2.0)]
    assert len(diag) == 1
    # no duplicates: total length inside the overlaps equals the truth's there
    if overlap:
        ov = unary_union([fps[i].intersection(fps[j]) for i in range(4) for j in range(i + 1, 4)])
        inside = e.geometry.intersection(ov).length.sum()
        truth_inside = sum(r.intersection(ov).length for r in ROADS)
        assert inside == pytest.approx(truth_inside, rel=0.02)
    # attributes carried over (length-weighted), parts recorded
    single = e[~e["parts"].str.contains(",")]
    assert set(single["width_m"].round(6)) <= {6.0, 7.0, 8.0, 9.0}
    joined = e[e["parts"].str.contains(",")]
    assert len(joined) and joined["width_m"].between(6.0, 9.0).all()
    # three networks as drawn (the diagonal passes over the cross without a junction)
    assert e["component"].nunique() == 3 and len(merged.nodes) == 5 + 4


def test_geographic_parts_merge_in_metres_and_come_back_in_the_output_crs():
    fps = _quadrants(60.0)
    parts = []
    for k, fp in enumerate(fps):
        p = _part(fp, k, 0.2 * k, crs="EPSG:4326")
        fp_ll = gpd.GeoSeries([fp], crs=CRS).to_crs("EPSG:4326").iloc[0]
        parts.append(NetworkPart(p.edges, fp_ll, p.name, "EPSG:4326"))
    merged = merge_networks(parts, snap_m=3.0)
    assert merged.edges.crs.to_epsg() == 4326
    assert merged.edges["length_m"].sum() == pytest.approx(sum(r.length for r in ROADS), rel=0.01)
    assert merged.stats["dangling_seam_ends"] == 0


def test_far_apart_ends_are_not_joined_and_empty_parts_are_fine():
    fps = _quadrants(0.0)
    parts = [_part(fp, k, shift=8.0 * k) for k, fp in enumerate(fps)]
    parts.append(NetworkPart(gpd.GeoDataFrame(geometry=[], crs=CRS), box(X0 + 500, Y0, X0 + 600,
                                                                         Y0 + 100), "empty"))
    merged = merge_networks(parts, snap_m=3.0)
    assert merged.stats["dangling_seam_ends"] > 0
    assert (merged.nodes["degree"] >= 1).all()
