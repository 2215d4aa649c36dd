"""Geometric quality measures of extracted road lines against reference lines."""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Dict, List, Tuple, Union

import geopandas as gpd
import numpy as np
import shapely
from scipy import sparse
from scipy.sparse import csgraph
from shapely import union_all

from gis.errors import CRSError
from gis.units import bounds_centre_lonlat, is_metric, metric_crs

log = logging.getLogger(__name__)

Lines = Union[gpd.GeoDataFrame, gpd.GeoSeries]

__all__ = ["APLSScore", "BufferedScore", "apls", "buffered_precision_recall", "metric_crs_for"]


@dataclass(frozen=True)
class BufferedScore:
    """Result of :func:`buffered_precision_recall`; lengths in metres."""

    precision: float
    recall: float
    f1: float
    pred_length_m: float
    ref_length_m: float
    buffer_m: float
    metric_crs: str

    def as_dict(self) -> Dict[str, object]:
        return asdict(self)


def _geoseries(lines: Lines, name: str) -> gpd.GeoSeries:
    s = lines.geometry if isinstance(lines, gpd.GeoDataFrame) else lines
    if not isinstance(s, gpd.GeoSeries):
        raise TypeError(f"{name} must be a GeoDataFrame or GeoSeries, got {type(lines).__name__}")
    if s.crs is None:
        raise CRSError(f"{name} has no CRS")
    return s[~(s.is_empty | s.isna())]


def metric_crs_for(lines: Lines):
    """The CRS in which lengths of ``lines`` are measured: a projected metre CRS stays, anything
    else (geographic, feet) becomes the UTM zone at the centre of the lines
    (:func:`gis.units.metric_crs`)."""
    s = _geoseries(lines, "lines")
    if is_metric(s.crs):
        return s.crs
    return metric_crs(s.crs, bounds_centre_lonlat(s.crs, s.total_bounds))


def buffered_precision_recall(
    pred_lines: Lines, ref_lines: Lines, buffer_m: float
) -> BufferedScore:
    """Length-based precision and recall of predicted lines within ``buffer_m`` of reference lines.

    precision = length of ``pred_lines`` within ``buffer_m`` of ``ref_lines`` / total predicted
    length; recall = length of ``ref_lines`` within ``buffer_m`` of ``pred_lines`` / total reference
    length. Both inputs need a CRS; they are measured in the reference's metric CRS (its local UTM
    zone when geographic). Empty predictions give precision 0 (and recall 0); an empty reference
    gives recall 0.
    """
    if buffer_m <= 0:
        raise ValueError(f"buffer_m must be > 0, got {buffer_m}")
    ref = _geoseries(ref_lines, "ref_lines")
    pred = _geoseries(pred_lines, "pred_lines")
    mcrs = metric_crs_for(ref) if len(ref) else metric_crs_for(pred) if len(pred) else ref.crs
    ref_m = ref.to_crs(mcrs)
    pred_m = pred.to_crs(mcrs)
    pred_len = float(pred_m.length.sum())
    ref_len = float(ref_m.length.sum())

    def within(a: gpd.GeoSeries, b: gpd.GeoSeries) -> float:
        if not len(a) or not len(b):
            return 0.0
        zone = union_all(list(b.geometry.buffer(buffer_m)))
        return float(a.intersection(zone).length.sum())

    p = within(pred_m, ref_m) / pred_len if pred_len > 0 else 0.0
    r = within(ref_m, pred_m) / ref_len if ref_len > 0 else 0.0
    f1 = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return BufferedScore(p, r, f1, pred_len, ref_len, float(buffer_m), mcrs.to_string())


# ---------------------------------------------------------------------------------------------
# APLS (Average Path Length Similarity, SpaceNet 3)
# ---------------------------------------------------------------------------------------------
# Both line sets become graphs: MultiLineStrings are split into their parts, vertices that
# coincide to the millimetre in the metric CRS are one vertex (lines sharing a vertex join;
# lines crossing without one do not), chains of vertices with exactly two neighbours are merged
# into one edge, and an edge weighs its length in metres. Connected pieces whose longest
# shortest path is under ``min_component_m`` are dropped (stray fragments). Control points are
# every graph node plus points spread evenly along every edge, at most ``control_spacing_m``
# apart: none on an edge shorter than 3/4 of the spacing, its middle on one up to twice the
# spacing, ceil(length / spacing) - 1 points at equal steps beyond. For "A onto B", each
# control point of A is projected onto the nearest edge of B if that edge is within ``snap_m``;
# B is cut at those projections (points landing on the same spot, or within a millimetre of a
# node, share a node). Every ordered pair of control points joined by a path in A (L1) is
# compared with the path between their projections in B (L2): min(1, |L1 - L2| / L1), and 1
# when either point did not snap or B has no path. The half-score is 1 minus the mean of
# those, 0 without pairs; APLS is the harmonic mean of both halves (0 when either is 0).

_NODE_TOL_M = 1e-3  # projections closer than this to each other (or to a node) share a node


@dataclass(frozen=True)
class APLSScore:
    """Result of :func:`apls`. ``*_control_points``: control points of each graph;
    ``*_snapped``: how many of them lie within ``snap_m`` of the other graph; ``*_pairs``: the
    ordered pairs of connected control points scored for that half (``gt_pairs``: ground truth
    onto proposal); ``*_length_m``: total edge length of each graph (duplicate segments once,
    fragments dropped)."""

    apls: float
    apls_gt_onto_prop: float
    apls_prop_onto_gt: float
    gt_control_points: int
    prop_control_points: int
    gt_snapped: int
    prop_snapped: int
    gt_pairs: int
    prop_pairs: int
    gt_length_m: float
    prop_length_m: float
    control_spacing_m: float
    snap_m: float
    metric_crs: str

    def as_dict(self) -> Dict[str, object]:
        return asdict(self)


@dataclass
class _Graph:
    """Nodes ``xy`` (n, 2) and edges ``u``, ``v``, ``lines`` (metric LineStrings, u -> v),
    ``length`` (m)."""

    xy: np.ndarray
    u: np.ndarray
    v: np.ndarray
    lines: np.ndarray
    length: np.ndarray

    @property
    def n(self) -> int:
        return len(self.xy)


def _line_parts(s: gpd.GeoSeries) -> List[np.ndarray]:
    """Coordinate arrays (k, 2) of every LineString part, consecutive repeats removed."""
    geoms = np.asarray(s.values, dtype=object)
    parts = shapely.get_parts(geoms)
    parts = parts[np.isin(shapely.get_type_id(parts), (1, 2))]  # LineString, LinearRing
    out = []
    for raw in (shapely.get_coordinates(p) for p in parts):
        if len(raw) < 2:
            continue
        keep = np.ones(len(raw), bool)
        keep[1:] = np.any(np.diff(raw, axis=0) != 0, axis=1)
        if keep.sum() >= 2:
            out.append(raw[keep])
    return out


def _build_graph(s: gpd.GeoSeries, min_component_m: float) -> _Graph:
    """Graph of metric line geometries (see the block comment above)."""
    parts = _line_parts(s)
    if not parts:
        return _Graph(np.zeros((0, 2)), *(np.zeros(0, int),) * 2, np.zeros(0, object),
                      np.zeros(0))
    coords = np.concatenate(parts)
    # vertices equal to the millimetre are one vertex
    _, first, vid = np.unique(np.round(coords, 3), axis=0, return_index=True,
                              return_inverse=True)
    vid = vid.ravel()
    vxy = coords[first]
    ends = np.cumsum([len(p) for p in parts])
    a, b = vid[:-1], vid[1:]
    inner = np.ones(len(a), bool)
    inner[ends[:-1] - 1] = False  # no segment between the end of one part and the next
    a, b = a[inner], b[inner]
    seg = np.unique(np.sort(np.stack([a, b], 1), axis=1), axis=0)
    seg = seg[seg[:, 0] != seg[:, 1]]
    nv = len(vxy)
    adj: List[List[int]] = [[] for _ in range(nv)]
    for p, q in seg.tolist():
        adj[p].append(q)
        adj[q].append(p)
    deg = np.fromiter((len(x) for x in adj), int, nv)
    used = set()
    chains: List[List[int]] = []

    def walk(start: int, nxt: int) -> List[int]:
        chain = [start, nxt]
        used.add((min(start, nxt), max(start, nxt)))
        prev, cur = start, nxt
        while deg[cur] == 2 and cur != start:
            x, y = adj[cur]
            step = y if x == prev else x
            key = (min(cur, step), max(cur, step))
            if key in used:
                break
            used.add(key)
            chain.append(step)
            prev, cur = cur, step
        return chain

    for p in np.flatnonzero((deg != 2) & (deg > 0)).tolist():
        for q in adj[p]:
            if (min(p, q), max(p, q)) not in used:
                chains.append(walk(p, q))
    for p in range(nv):  # rings without a junction: anchored at their first vertex
        for q in adj[p]:
            if (min(p, q), max(p, q)) not in used:
                chains.append(walk(p, q))
    node_of = {}
    for c in chains:
        for p in (c[0], c[-1]):
            node_of.setdefault(p, len(node_of))
    xy = vxy[list(node_of)] if node_of else np.zeros((0, 2))
    u = np.array([node_of[c[0]] for c in chains], int)
    v = np.array([node_of[c[-1]] for c in chains], int)
    lines = np.empty(len(chains), dtype=object)
    lines[:] = [shapely.LineString(vxy[c]) for c in chains]
    g = _Graph(xy, u, v, lines, shapely.length(lines))
    return _drop_small_components(g, min_component_m)


def _csgraph(n: int, u: np.ndarray, v: np.ndarray, w: np.ndarray) -> sparse.csr_matrix:
    """Symmetric sparse adjacency keeping the shortest of parallel edges; no self-loops."""
    keep = u != v
    i, j, w = np.minimum(u, v)[keep], np.maximum(u, v)[keep], np.maximum(w[keep], 1e-9)
    order = np.lexsort((w, j, i))
    i, j, w = i[order], j[order], w[order]
    first = np.ones(len(i), bool)
    first[1:] = (i[1:] != i[:-1]) | (j[1:] != j[:-1])
    i, j, w = i[first], j[first], w[first]
    return sparse.csr_matrix((np.concatenate([w, w]), (np.concatenate([i, j]),
                                                        np.concatenate([j, i]))), shape=(n, n))


def _drop_small_components(g: _Graph, min_length: float) -> _Graph:
    if not g.n or min_length <= 0:
        return g
    m = _csgraph(g.n, g.u, g.v, g.length)
    ncomp, label = csgraph.connected_components(m, directed=False)
    comp_len = np.bincount(label[g.u], weights=g.length, minlength=ncomp)
    bad = []
    for c in np.flatnonzero(comp_len < min_length):  # diameter <= total length
        nodes = np.flatnonzero(label == c)
        d = csgraph.dijkstra(m, directed=False, indices=nodes)[:, nodes]
        if np.max(d[np.isfinite(d)], initial=0.0) < min_length:
            bad.append(c)
    if not bad:
        return g
    keep_node = ~np.isin(label, bad)
    new_id = np.cumsum(keep_node) - 1
    keep_edge = keep_node[g.u]
    return _Graph(g.xy[keep_node], new_id[g.u[keep_edge]], new_id[g.v[keep_edge]],
                  g.lines[keep_edge], g.length[keep_edge])


def _control_positions(g: _Graph, spacing: float) -> Tuple[np.ndarray, np.ndarray]:
    """Edge index and distance along it of the evenly spaced control points of ``g``."""
    ids, pos = [], []
    for e, length in enumerate(g.length):
        if length < 0.75 * spacing - _NODE_TOL_M:
            continue
        # a millimetre of slack so that a 200 m edge read back from lon/lat gets 3 points
        k = max(1, int(np.ceil((length - _NODE_TOL_M) / spacing)) - 1)
        ids.append(np.full(k, e))
        pos.append(length * np.arange(1, k + 1) / (k + 1))
    if not ids:
        return np.zeros(0, int), np.zeros(0)
    return np.concatenate(ids), np.concatenate(pos)


def _cut(g: _Graph, edge: np.ndarray, pos: np.ndarray) -> Tuple[sparse.csr_matrix, np.ndarray]:
    """``g`` cut at distance ``pos`` along edges ``edge``: its adjacency and the node of every
    cut point (points within ``_NODE_TOL_M`` of one another or of an edge's end share it)."""
    n = g.n
    node = np.empty(len(edge), int)
    uu, vv, ww = [], [], []
    cut_edges = set(edge.tolist())
    order = np.lexsort((pos, edge))
    k = 0
    while k < len(order):
        e = edge[order[k]]
        length = g.length[e]
        prev_node, prev_pos = g.u[e], 0.0
        while k < len(order) and edge[order[k]] == e:
            p = float(pos[order[k]])
            if p - prev_pos <= _NODE_TOL_M:
                node[order[k]] = prev_node
            elif length - p <= _NODE_TOL_M:
                node[order[k]] = g.v[e]
            else:
                uu.append(prev_node), vv.append(n), ww.append(p - prev_pos)
                prev_node, prev_pos = n, p
                node[order[k]] = n
                n += 1
            k += 1
        uu.append(prev_node), vv.append(g.v[e]), ww.append(length - prev_pos)
    whole = np.array([e not in cut_edges for e in range(len(g.u))], bool)
    u = np.concatenate([g.u[whole], np.asarray(uu, int)])
    v = np.concatenate([g.v[whole], np.asarray(vv, int)])
    w = np.concatenate([g.length[whole], np.asarray(ww, float)])
    return _csgraph(n, u, v, w), node


def _half_score(d_native: sparse.csr_matrix, cp_nodes: np.ndarray, d_other: sparse.csr_matrix,
                snapped: np.ndarray) -> Tuple[float, int]:
    """1 - mean path difference over ordered connected pairs of control points (nodes
    ``cp_nodes`` of ``d_native``); ``snapped``: their nodes in ``d_other`` (-1: not snapped).
    Sources go in chunks of ~4M distances per array, so memory stays bounded."""
    n = len(cp_nodes)
    chunk = int(np.clip(4_000_000 // max(d_native.shape[0], d_other.shape[0], 1), 16, 256))
    total, count = 0.0, 0
    ok = snapped >= 0
    for s in range(0, n, chunk):
        rows = np.arange(s, min(n, s + chunk))
        l1 = csgraph.dijkstra(d_native, directed=False, indices=cp_nodes[rows])[:, cp_nodes]
        l1[rows - s, rows] = np.inf  # a point with itself is no pair
        valid = np.isfinite(l1) & (l1 > 1e-3)
        diff = np.ones_like(l1)
        r_ok = ok[rows]
        if r_ok.any() and ok.any():
            l2 = np.full_like(l1, np.inf)
            sub = csgraph.dijkstra(d_other, directed=False, indices=snapped[rows[r_ok]])
            l2[np.ix_(r_ok, ok)] = sub[:, snapped[ok]]
            with np.errstate(invalid="ignore", divide="ignore"):
                rel = np.minimum(1.0, np.abs(l1 - l2) / l1)
            found = valid & np.isfinite(l2)
            diff[found] = rel[found]
        total += float(diff[valid].sum())
        count += int(valid.sum())
    return (1.0 - total / count if count else 0.0), count


def apls(
    pred_lines: Lines,
    ref_lines: Lines,
    control_spacing_m: float = 50.0,
    snap_m: float = 4.0,
    min_component_m: float = 5.0,
) -> APLSScore:
    """APLS of predicted road lines against reference (ground truth) lines, SpaceNet 3 settings
    by default (control points every 50 m, snapped within 4 m).

    Both inputs need a CRS (any; they are measured in the reference's metric CRS, its local
    UTM zone when geographic, like :func:`buffered_precision_recall`). Lines join where they
    share a vertex; crossings without a shared vertex (bridges) do not join. Identical inputs
    score 1.0; an empty prediction or reference scores 0. See the comment above for the exact
    definition.
    """
    if control_spacing_m <= 0 or snap_m < 0:
        raise ValueError(f"control_spacing_m must be > 0 and snap_m >= 0, got "
                         f"{control_spacing_m}, {snap_m}")
    ref = _geoseries(ref_lines, "ref_lines")
    pred = _geoseries(pred_lines, "pred_lines")
    mcrs = metric_crs_for(ref) if len(ref) else metric_crs_for(pred) if len(pred) else ref.crs
    gt = _build_graph(ref.to_crs(mcrs), min_component_m)
    pr = _build_graph(pred.to_crs(mcrs), min_component_m)

    def control_points(g: _Graph):
        e, p = _control_positions(g, control_spacing_m)
        native, mid_nodes = _cut(g, e, p)
        mid_xy = shapely.get_coordinates(shapely.line_interpolate_point(g.lines[e], p)) \
            if len(e) else np.zeros((0, 2))
        nodes = np.concatenate([np.arange(g.n), mid_nodes])
        xy = np.concatenate([g.xy, mid_xy])
        nodes, first = np.unique(nodes, return_index=True)
        return native, nodes, xy[first]

    def snap(xy: np.ndarray, g: _Graph) -> Tuple[sparse.csr_matrix, np.ndarray]:
        node = np.full(len(xy), -1)
        if not len(xy) or not g.n:
            return _csgraph(g.n, g.u, g.v, g.length), node
        pts = shapely.points(xy)
        tree = shapely.STRtree(g.lines)
        (i, e) = tree.query_nearest(pts, max_distance=snap_m, all_matches=False)
        pos = shapely.line_locate_point(g.lines[e], pts[i])
        adj, cut_node = _cut(g, e, pos)
        node[i] = cut_node
        return adj, node

    gt_native, gt_cp, gt_xy = control_points(gt)
    pr_native, pr_cp, pr_xy = control_points(pr)
    pr_prime, gt_on_pr = snap(gt_xy, pr)
    gt_prime, pr_on_gt = snap(pr_xy, gt)
    if len(gt_cp) and len(pr_cp):
        a, n_a = _half_score(gt_native, gt_cp, pr_prime, gt_on_pr)
        b, n_b = _half_score(pr_native, pr_cp, gt_prime, pr_on_gt)
    else:
        a = b = 0.0
        n_a = n_b = 0
    total = 2 * a * b / (a + b) if a > 0 and b > 0 else 0.0
    return APLSScore(total, a, b, len(gt_cp), len(pr_cp), int((gt_on_pr >= 0).sum()),
                     int((pr_on_gt >= 0).sum()), n_a, n_b, float(gt.length.sum()),
                     float(pr.length.sum()), float(control_spacing_m), float(snap_m),
                     mcrs.to_string())
