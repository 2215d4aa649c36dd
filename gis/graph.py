"""Skeleton -> topological graph, and the graph clean-up steps of :mod:`gis.vectorize`.

The graph is a :class:`networkx.MultiGraph` whose nodes are junctions and endpoints of a
one-pixel-wide skeleton and whose edges are the pixel paths between them. Attributes:

* node: ``rc`` float ``(2,)`` pixel (row, col) of the node (centroid of its pixel cluster),
  ``xy`` float ``(2,)`` the same point in a metric frame (metres, see ``to_metric``).
* edge: ``start`` (the node id at ``rc[0]``), ``rc`` float ``(N, 2)`` pixel (row, col) path from
  node to node (both node points included), ``xy`` float ``(N, 2)`` the path in metres,
  ``length_m`` float, ``bridged_m`` float (length of bridged gaps inside the edge).

``to_metric`` is a callable mapping pixel (row, col) ``(N, 2)`` to metric ``(N, 2)`` coordinates
(projected metres, e.g. the local UTM zone for a geographic raster); :mod:`gis.vectorize` builds it
from the raster's CRS and transform. All thresholds here are in metres.

The tracing is our own implementation of the usual approach (as in ``sknw``): pixels with a number
of 8-neighbours other than two are node pixels, 8-connected node pixels form one node, and every
path of two-neighbour pixels between node pixels is one edge; closed loops without any node pixel
get an artificial node. The tracing works on the list of skeleton pixels (sorted linear indices and
an 8-neighbour table found by binary search, about 60 bytes per skeleton pixel), never on an array
of the raster's size, so a strip-wise skeleton of any raster can be traced at once; the tracing
loop is Python, linear in the number of skeleton pixels.
"""
from __future__ import annotations

import logging
import math
from typing import Callable, Dict, Hashable, List, Optional, Tuple

import networkx as nx
import numpy as np

log = logging.getLogger(__name__)

ToMetric = Callable[[np.ndarray], np.ndarray]

__all__ = [
    "skeleton_to_graph",
    "skeleton_pixels_to_graph",
    "attach_metric",
    "merge_degree2",
    "prune_spurs",
    "bridge_gaps",
    "merge_close_junctions",
    "remove_small_components",
    "douglas_peucker",
    "path_length",
]

#: a collinear bridge into the inside of an edge must meet it at least this steeply (degrees)
_MIN_INCIDENCE_DEG = 45.0


def path_length(xy: np.ndarray) -> float:
    """Length of a polyline ``(N, 2)`` in its own units (0 for fewer than two points)."""
    xy = np.asarray(xy, dtype=float)
    if len(xy) < 2:
        return 0.0
    return float(np.hypot(*np.diff(xy, axis=0).T).sum())


def skeleton_to_graph(skeleton: np.ndarray) -> nx.MultiGraph:
    """Trace a one-pixel-wide skeleton into a graph of nodes and pixel-path edges.

    Args:
        skeleton: bool/uint8 ``(H, W)``, non-zero = skeleton pixel (8-connected, as produced by
            :func:`skimage.morphology.skeletonize`).

    Returns:
        MultiGraph with node attribute ``rc`` and edge attributes ``start`` and ``rc`` (pixel
        (row, col) coordinates, see the module docstring). No metric attributes yet: call
        :func:`attach_metric`.
    """
    sk = np.asarray(skeleton)
    rows, cols = np.nonzero(sk)
    return skeleton_pixels_to_graph(rows, cols, sk.shape)


def skeleton_pixels_to_graph(rows: np.ndarray, cols: np.ndarray,
                             shape: Tuple[int, int]) -> nx.MultiGraph:
    """:func:`skeleton_to_graph` of a skeleton given by its pixels' ``rows`` and ``cols`` (any
    order, duplicates ignored) on a raster of ``shape``; memory is proportional to the number of
    skeleton pixels, not to the raster's area."""
    w = int(shape[1])
    wp = w + 2  # keys index a raster padded by one pixel, so neighbour offsets never wrap
    keys = np.unique((np.asarray(rows, np.int64) + 1) * wp + (np.asarray(cols, np.int64) + 1))
    n_px = len(keys)
    r_of = (keys // wp - 1).astype(np.int32)
    c_of = (keys % wp - 1).astype(np.int32)
    offsets = np.array([-wp - 1, -wp, -wp + 1, -1, 1, wp - 1, wp, wp + 1], dtype=np.int64)
    # neighbour table: index of each 8-neighbour in ``keys`` or ``none`` (= n_px, a sentinel)
    none = n_px
    nbr = np.full((n_px + 1, 8), none, dtype=np.int64 if n_px >= 2**31 - 1 else np.int32)
    count = np.zeros(n_px, dtype=np.uint8)
    for j, o in enumerate(offsets):
        target = keys + o
        pos = np.minimum(np.searchsorted(keys, target), max(n_px - 1, 0))
        hit = keys[pos] == target if n_px else np.zeros(0, bool)
        nbr[:n_px, j][hit] = pos[hit]
        count += hit
        del target, pos, hit
    is_node = count != 2
    del count
    node_idx = np.flatnonzero(is_node)
    # node clusters: 8-connected node pixels, numbered in raster order of their first pixel
    lab = np.zeros(n_px + 1, dtype=np.int32)
    g = nx.MultiGraph()
    n_nodes = 0
    if len(node_idx):
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        local = np.full(n_px + 1, -1, dtype=np.int32)
        local[node_idx] = np.arange(len(node_idx))
        sub = nbr[node_idx]
        src = np.repeat(np.arange(len(node_idx)), 8)
        dst = local[sub.ravel()]
        keep = dst >= 0
        k = len(node_idx)
        adj = coo_matrix((np.ones(int(keep.sum()), np.int8), (src[keep], dst[keep])),
                         shape=(k, k)).tocsr()
        n_nodes, comp = connected_components(adj, directed=False)
        first = np.full(n_nodes, k, dtype=np.int64)
        np.minimum.at(first, comp, np.arange(k))
        rank = np.empty(n_nodes, dtype=np.int64)
        rank[np.argsort(first)] = np.arange(n_nodes)
        node_label = rank[comp] + 1
        lab[node_idx] = node_label
        cnt = np.bincount(node_label, minlength=n_nodes + 1)[1:].astype(float)
        # node centroids are averaged in the padded grid's coordinates (+1) and shifted back:
        # float rounding of the mean depends on that offset, and node positions are defined
        # with it (the strip-wise and whole-mask tracings give identical vertices)
        rsum = np.bincount(node_label, weights=r_of[node_idx] + 1.0, minlength=n_nodes + 1)[1:]
        csum = np.bincount(node_label, weights=c_of[node_idx] + 1.0, minlength=n_nodes + 1)[1:]
        for i in range(n_nodes):
            g.add_node(i + 1, rc=np.array([rsum[i] / cnt[i] - 1.0, csum[i] / cnt[i] - 1.0]))
    visited = np.zeros(n_px + 1, dtype=bool)
    visited[none] = True

    def trace(start_px: int, first_px: int, start_label: int) -> Optional[Tuple[List[int], int]]:
        """Walk from node pixel ``start_px`` through ``first_px``; return (path, end label)."""
        path = [first_px]
        visited[first_px] = True
        prev, cur = start_px, first_px
        while True:
            nxt = -1
            end_label = 0
            for q in nbr[cur].tolist():
                if q == none or q == prev:
                    continue
                lq = int(lab[q])
                if lq:
                    if len(path) == 1 and lq == start_label:
                        continue  # touches its own start cluster again
                    end_label = lq
                    break
                if not visited[q]:
                    nxt = q
            if end_label:
                return path, end_label
            if nxt < 0:
                return None  # dead end inside a junction cluster: tiny, dropped
            visited[nxt] = True
            path.append(nxt)
            prev, cur = cur, nxt

    def points(path: List[int]) -> np.ndarray:
        idx = np.asarray(path, dtype=np.int64)
        return np.column_stack([r_of[idx], c_of[idx]]).astype(float)

    for p in node_idx.tolist():
        lp = int(lab[p])
        for q in nbr[p].tolist():
            if q == none or lab[q] or visited[q]:
                continue
            res = trace(p, q, lp)
            if res is None:
                continue
            path, le = res
            pts = np.vstack([g.nodes[lp]["rc"], points(path), g.nodes[le]["rc"]])
            g.add_edge(lp, le, start=lp, rc=pts, bridged_m=0.0)

    # closed loops without node pixels: every remaining skeleton pixel has two neighbours
    next_id = n_nodes + 1
    for p in np.flatnonzero(~visited[:n_px] & (lab[:n_px] == 0)).tolist():
        if visited[p]:
            continue
        visited[p] = True
        nid = next_id
        next_id += 1
        g.add_node(nid, rc=np.array([float(r_of[p]), float(c_of[p])]))
        nbrs = [q for q in nbr[p].tolist() if q != none]
        # walk from p along one neighbour until we come back next to p
        path: List[int] = []
        prev, cur = p, nbrs[0] if nbrs else -1
        while cur >= 0 and not visited[cur]:
            visited[cur] = True
            path.append(cur)
            cand = [q for q in nbr[cur].tolist() if q != none and q != prev]
            nxt = next((c for c in cand if not visited[c]), -1)
            prev, cur = cur, nxt
        if len(path) >= 2:
            pts = np.vstack([g.nodes[nid]["rc"], points(path), g.nodes[nid]["rc"]])
            g.add_edge(nid, nid, start=nid, rc=pts, bridged_m=0.0)
    log.debug("skeleton traced: %d nodes, %d edges", g.number_of_nodes(), g.number_of_edges())
    return g


def attach_metric(g: nx.MultiGraph, to_metric: ToMetric) -> nx.MultiGraph:
    """Add ``xy`` (metres) to nodes and edges and ``length_m`` to edges, in place; returns ``g``."""
    if g.number_of_nodes():
        ids = list(g.nodes)
        xy = to_metric(np.array([g.nodes[n]["rc"] for n in ids], dtype=float))
        for n, p in zip(ids, xy):
            g.nodes[n]["xy"] = np.asarray(p, dtype=float)
    edges = list(g.edges(keys=True, data=True))
    if edges:
        sizes = [len(d["rc"]) for _, _, _, d in edges]
        allxy = to_metric(np.concatenate([d["rc"] for _, _, _, d in edges]))
        splits = np.cumsum(sizes)[:-1]
        for (_, _, _, d), xy in zip(edges, np.split(allxy, splits)):
            d["xy"] = xy
            d["length_m"] = path_length(xy)
    return g


def _oriented(d: dict, from_node: Hashable, key: str) -> np.ndarray:
    """Edge array ``key`` oriented so that it starts at ``from_node``."""
    arr = d[key]
    return arr if d["start"] == from_node else arr[::-1]


def merge_degree2(g: nx.MultiGraph) -> int:
    """Merge every node of degree 2 (not a self-loop) into one edge, in place; returns the count.

    Needs the metric attributes (:func:`attach_metric`). ``bridged_m`` adds up.
    """
    merged = 0
    for n in list(g.nodes):
        if n not in g or g.degree(n) != 2:
            continue
        inc = list(g.edges(n, keys=True, data=True))
        if len(inc) != 2 or any(u == v for u, v, _, _ in inc):
            continue
        (_, a, ka, da), (_, b, kb, db) = inc
        # path a -> n -> b
        rc = np.concatenate([_oriented(da, a, "rc"), _oriented(db, n, "rc")[1:]])
        xy = np.concatenate([_oriented(da, a, "xy"), _oriented(db, n, "xy")[1:]])
        attrs = dict(
            start=a,
            rc=rc,
            xy=xy,
            length_m=da["length_m"] + db["length_m"],
            bridged_m=da.get("bridged_m", 0.0) + db.get("bridged_m", 0.0),
        )
        g.remove_edge(n, a, ka)
        g.remove_edge(n, b, kb)
        g.remove_node(n)
        g.add_edge(a, b, **attrs)
        merged += 1
    return merged


def prune_spurs(g: nx.MultiGraph, spur_length_m: float, max_passes: int = 5) -> int:
    """Remove dangling edges shorter than ``spur_length_m`` that hang off a junction, in place.

    A spur is an edge with one end of degree 1 and the other of degree >= 3. After each pass
    degree-2 nodes are merged, and passes repeat (at most ``max_passes``) until nothing changes.
    Isolated short segments (both ends degree 1) are left to :func:`remove_small_components`.
    Returns the number of edges removed.
    """
    removed = 0
    for _ in range(max_passes):
        spurs = []
        for u, v, k, d in g.edges(keys=True, data=True):
            if u == v or d["length_m"] >= spur_length_m:
                continue
            du, dv = g.degree(u), g.degree(v)
            if (du == 1 and dv >= 3) or (dv == 1 and du >= 3):
                spurs.append((u, v, k, u if du == 1 else v))
        if not spurs:
            break
        for u, v, k, leaf in spurs:
            if g.has_edge(u, v, k):
                g.remove_edge(u, v, k)
                if g.degree(leaf) == 0:
                    g.remove_node(leaf)
        removed += len(spurs)
        merge_degree2(g)
    for n in [n for n in g.nodes if g.degree(n) == 0]:
        g.remove_node(n)
    return removed


def _unit(v: np.ndarray) -> Optional[np.ndarray]:
    n = float(np.hypot(*v))
    return None if n == 0 else v / n


def _dangling_direction(xy_from_end: np.ndarray, probe_m: float) -> Optional[np.ndarray]:
    """Unit direction pointing out of a dangling end; ``xy_from_end[0]`` is the end point."""
    seg = np.hypot(*np.diff(xy_from_end, axis=0).T)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    i = int(np.searchsorted(cum, probe_m))
    i = min(max(i, 1), len(xy_from_end) - 1)
    return _unit(xy_from_end[0] - xy_from_end[i])


def bridge_gaps(
    g: nx.MultiGraph,
    to_metric: ToMetric,
    gap_m: float,
    collinear_gap_m: float,
    collinear_angle_deg: float,
    direction_probe_m: float = 10.0,
    snap_m: float = 1.0,
) -> int:
    """Join dangling ends (degree-1 nodes) to the nearest qualifying point of the network, in place.

    A target point (any vertex of any edge, including other dangling ends) qualifies when it is
    closer than ``gap_m``, or closer than ``collinear_gap_m`` and the joining segment deviates by at
    most ``collinear_angle_deg`` from the direction of the dangling edge (measured over its last
    ``direction_probe_m``; dangling edges shorter than half of that have no trusted direction). A
    collinear target inside an edge must also be met at an angle of at least 45 degrees to that
    edge (no grazing joins onto a parallel road), and a collinear target that is itself a dangling
    end must point back within ``collinear_angle_deg``. Targets already reachable through the
    network within three times the gap (plus ``snap_m``) are skipped: such a join would only add a
    shortcut. A target inside an edge splits that edge (targets within ``snap_m`` of an edge's node
    snap to the node). Each end joins at most once and two ends never join each other twice.
    ``bridged_m`` of a split edge is shared out in proportion to length. Returns the number of
    bridges added.
    """
    from shapely import STRtree, points
    from shapely.geometry import LineString

    ends = [n for n in g.nodes if g.degree(n) == 1]
    if not ends:
        return 0
    edge_list = list(g.edges(keys=True, data=True))
    lines = [LineString(d["xy"]) if len(d["xy"]) >= 2 else LineString([d["xy"][0], d["xy"][0]])
             for _, _, _, d in edge_list]
    tree = STRtree(lines)
    cos_max = math.cos(math.radians(collinear_angle_deg))
    reach = max(gap_m, collinear_gap_m)

    ends_set = set(ends)
    directions: Dict[Hashable, Optional[np.ndarray]] = {}
    for e in ends:
        (_, _, _, d) = next(iter(g.edges(e, keys=True, data=True)))
        # a direction is trusted only on a dangling edge at least half the probe length long
        directions[e] = (_dangling_direction(_oriented(d, e, "xy"), direction_probe_m)
                         if d["length_m"] >= 0.5 * direction_probe_m else None)
    cos_incidence = math.cos(math.radians(_MIN_INCIDENCE_DEG))

    proposals = []  # (distance, end node, edge index, vertex index)
    for e in ends:
        exy = g.nodes[e]["xy"]
        direction = directions[e]
        near = tree.query(points(exy).buffer(reach))
        if len(near) == 0:
            continue
        dist_net = nx.single_source_dijkstra_path_length(
            g, e, cutoff=3 * reach + snap_m, weight="length_m"
        )
        best = None
        for ei in near:
            u, v, kk, dd = edge_list[int(ei)]
            xy = dd["xy"]
            vec = xy - exy
            dist = np.hypot(vec[:, 0], vec[:, 1])
            ok = dist <= gap_m
            if direction is not None and collinear_gap_m > 0:
                with np.errstate(invalid="ignore", divide="ignore"):
                    unit = vec / dist[:, None]
                    cosang = unit @ direction
                    # the joining segment must meet the target edge at a steep angle ...
                    nv = len(xy)
                    i0 = np.clip(np.arange(nv) - 3, 0, nv - 1)
                    i1 = np.clip(np.arange(nv) + 3, 0, nv - 1)
                    tan = xy[i1] - xy[i0]
                    tan /= np.maximum(np.hypot(tan[:, 0], tan[:, 1]), 1e-12)[:, None]
                    steep = np.abs(np.sum(tan * unit, axis=1)) <= cos_incidence
                    # ... unless the target is another dangling end that looks back at us
                    a_end, b_end = dd["start"], (v if dd["start"] == u else u)
                    for j, node in ((0, a_end), (nv - 1, b_end)):
                        if node in ends_set and node != e:
                            od = directions.get(node)
                            steep[j] = od is not None and float(-unit[j] @ od) >= cos_max
                coll = (dist <= collinear_gap_m) & (cosang >= cos_max) & steep
                ok |= coll
            ok &= dist > 0
            if not ok.any():
                continue
            # network distance from e to each vertex of this edge
            seg = np.hypot(*np.diff(xy, axis=0).T)
            s = np.concatenate([[0.0], np.cumsum(seg)])
            a = dd["start"]
            b = v if a == u else u
            da = dist_net.get(a, math.inf)
            db = dist_net.get(b, math.inf)
            net = np.minimum(da + s, db + (s[-1] - s))
            ok &= net > 3 * dist + snap_m
            if not ok.any():
                continue
            cand = np.flatnonzero(ok)
            j = int(cand[np.argmin(dist[cand])])
            if best is None or dist[j] < best[0]:
                best = (float(dist[j]), e, int(ei), j)
        if best is not None:
            proposals.append(best)

    proposals.sort()
    used_ends = set()
    joined_pairs = set()
    joins = []  # (end node, target) with target ("node", id) or ("split", edge index, vertex index)
    for _dist, e, ei, j in proposals:
        if e in used_ends:
            continue
        u, v, k, d = edge_list[ei]
        s = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(d["xy"], axis=0).T))])
        if s[j] <= snap_m:
            target = ("node", d["start"])
        elif s[-1] - s[j] <= snap_m:
            target = ("node", v if d["start"] == u else u)
        else:
            target = ("split", ei, j)
        if target[0] == "node":
            t = target[1]
            if t == e or frozenset((e, t)) in joined_pairs:
                continue
            joined_pairs.add(frozenset((e, t)))
            if g.degree(t) == 1:
                used_ends.add(t)
        used_ends.add(e)
        joins.append((e, target))

    # split edges at their requested vertices (several per edge possible)
    splits: Dict[int, List[int]] = {}
    for _, t in joins:
        if t[0] == "split":
            splits.setdefault(t[1], []).append(t[2])
    split_node: Dict[Tuple[int, int], Hashable] = {}
    next_id = max((n for n in g.nodes if isinstance(n, int)), default=0) + 1
    for ei, idxs in splits.items():
        u, v, k, d = edge_list[ei]
        a = d["start"]
        b = v if a == u else u
        cuts = sorted(set(idxs))
        g.remove_edge(u, v, k)

        def part(xy: np.ndarray, d: dict = d) -> dict:
            length = path_length(xy)
            return dict(length_m=length,
                        bridged_m=d.get("bridged_m", 0.0) * length / max(d["length_m"], 1e-9))

        prev_node, prev_i = a, 0
        for j in cuts:
            nid = next_id
            next_id += 1
            g.add_node(nid, rc=d["rc"][j].copy(), xy=d["xy"][j].copy())
            split_node[(ei, j)] = nid
            rc, xy = d["rc"][prev_i:j + 1], d["xy"][prev_i:j + 1]
            g.add_edge(prev_node, nid, start=prev_node, rc=rc, xy=xy, **part(xy))
            prev_node, prev_i = nid, j
        rc, xy = d["rc"][prev_i:], d["xy"][prev_i:]
        g.add_edge(prev_node, b, start=prev_node, rc=rc, xy=xy, **part(xy))

    for e, t in joins:
        tn = t[1] if t[0] == "node" else split_node[(t[1], t[2])]
        p0, p1 = g.nodes[e]["rc"], g.nodes[tn]["rc"]
        n = max(2, int(math.ceil(float(np.hypot(*(p1 - p0))))) + 1)
        rc = np.linspace(p0, p1, n)
        xy = to_metric(rc)
        length = path_length(xy)
        g.add_edge(e, tn, start=e, rc=rc, xy=xy, length_m=length, bridged_m=length)
    if joins:
        log.debug("bridged %d gaps", len(joins))
    return len(joins)


def merge_close_junctions(g: nx.MultiGraph, max_length_m: float) -> int:
    """Contract edges shorter than ``max_length_m`` between two junctions (degree >= 3), in place.

    Thinning often splits one crossing into two T-junctions a little apart; the two nodes become
    one at their midpoint and every edge that ended at either now ends there (its end vertex
    moved, its length recomputed). Returns the number of contracted edges.
    """
    merged = 0
    while True:
        short = None
        for u, v, k, d in g.edges(keys=True, data=True):
            if u != v and d["length_m"] < max_length_m and g.degree(u) >= 3 and g.degree(v) >= 3:
                if short is None or d["length_m"] < short[3]:
                    short = (u, v, k, d["length_m"])
        if short is None:
            return merged
        u, v, k, _ = short
        g.remove_edge(u, v, k)
        rc = (g.nodes[u]["rc"] + g.nodes[v]["rc"]) / 2.0
        xy = (g.nodes[u]["xy"] + g.nodes[v]["xy"]) / 2.0
        g.nodes[u]["rc"], g.nodes[u]["xy"] = rc, xy
        for a, b, kk, d in list(g.edges(v, keys=True, data=True)):
            other = b if a == v else a
            g.remove_edge(a, b, kk)
            if other == v:  # self-loop at v becomes a self-loop at u
                d["start"] = u
                g.add_edge(u, u, **d)
                continue
            if d["start"] == v:
                d["start"] = u
            g.add_edge(u, other, **d)
        g.remove_node(v)
        for a, b, _k, d in g.edges(u, keys=True, data=True):
            if a == b:
                ends = (0, -1)  # a loop: both of its ends are at u
            else:
                ends = (0,) if d["start"] == u else (-1,)
            d["rc"] = d["rc"].copy()
            d["xy"] = d["xy"].copy()
            for end in ends:
                d["rc"][end] = rc
                d["xy"][end] = xy
            d["length_m"] = path_length(d["xy"])
        merged += 1


def remove_small_components(g: nx.MultiGraph, min_length_m: float) -> int:
    """Remove connected components whose total edge length is below ``min_length_m``, in place."""
    removed = 0
    for comp in list(nx.connected_components(g)):
        total = sum(d["length_m"] for _, _, d in g.subgraph(comp).edges(data=True))
        if total < min_length_m:
            g.remove_nodes_from(comp)
            removed += 1
    return removed


def douglas_peucker(xy: np.ndarray, tolerance: float) -> np.ndarray:
    """Indices of the vertices of ``xy`` ``(N, 2)`` kept by Douglas-Peucker at ``tolerance``.

    The first and last vertices are always kept; returns a sorted int array. ``tolerance`` is in the
    units of ``xy``.
    """
    xy = np.asarray(xy, dtype=float)
    n = len(xy)
    if n <= 2 or tolerance <= 0:
        return np.arange(n)
    keep = np.zeros(n, dtype=bool)
    keep[0] = keep[-1] = True
    stack = [(0, n - 1)]
    while stack:
        i, j = stack.pop()
        if j - i < 2:
            continue
        p, q = xy[i], xy[j]
        seg = q - p
        pts = xy[i + 1:j] - p
        L = float(np.hypot(*seg))
        if L == 0:
            dist = np.hypot(pts[:, 0], pts[:, 1])
        else:
            dist = np.abs(seg[0] * pts[:, 1] - seg[1] * pts[:, 0]) / L
        k = int(np.argmax(dist))
        if dist[k] > tolerance:
            m = i + 1 + k
            keep[m] = True
            stack.append((i, m))
            stack.append((m, j))
    return np.flatnonzero(keep)
