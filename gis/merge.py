"""Join the road networks of overlapping or touching scenes (or blocks of one raster) into one.

Each part is a network (edge LineStrings) with the *footprint* it was extracted from. Where
footprints overlap, both parts saw the same roads; keeping both would duplicate them, and cutting
at an arbitrary line would leave two ends that do not meet. :func:`merge_networks`:

1. **Ownership.** Every point of the union of footprints belongs to exactly one part: among the
   parts whose footprint contains it, the one whose footprint centre is nearest (ties: the earlier
   part). For a grid of equal, overlapping scenes the seams are the middle lines of the overlaps,
   as far as possible from either scene's border, where a network sees the least context.
   :func:`ownership_cores` returns these *cores* (they tile the union without overlap).
2. **Clip.** Each part keeps its edges inside its own core; an edge crossing a seam is cut there.
3. **Join.** Cut ends on a seam are paired with the nearest cut end of another part within
   ``snap_m`` (closest pairs first); both move to their midpoint. A cut end left without a partner
   snaps to the nearest end of any kind of another part within ``snap_m``.
4. **Topology.** The pieces are noded at shared end points; chains through points where exactly
   two pieces meet are merged into one line, so a road crossing seams is one connected line.
   Node ids, degrees, lengths and connected components are recomputed.

All geometry is handled in a metric working CRS (the output CRS when it is projected in metres,
otherwise the UTM zone of the union's centre) and returned in the output CRS. Pure geometry: no
rasters and no task engine here.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import geopandas as gpd
import numpy as np
import shapely
from pyproj import CRS as ProjCRS
from pyproj import Transformer
from shapely.geometry import LineString, Point, Polygon
from shapely.ops import unary_union
from shapely.prepared import prep

from gis.errors import CRSError
from gis.units import metric_crs

log = logging.getLogger(__name__)

__all__ = ["NetworkPart", "MergedNetwork", "ownership_cores", "merge_networks",
           "footprint_polygon", "reproject_geometry", "metric_crs_for"]

#: coordinates closer than this (working CRS units, metres) are one point
_EPS = 1e-3


@dataclass
class NetworkPart:
    """One part's network: ``edges`` (LineStrings with a CRS; optional ``width_m``,
    ``confidence`` and ``bridged_m`` columns are carried over) and the ``footprint`` polygon it
    was extracted from, in ``footprint_crs`` (default the edges' CRS)."""

    edges: gpd.GeoDataFrame
    footprint: Polygon
    name: str = ""
    footprint_crs: object = None


@dataclass
class MergedNetwork:
    """Result of :func:`merge_networks`: ``edges`` (``u``, ``v``, ``length_m``, ``width_m``,
    ``confidence``, ``bridged_m``, ``component``, ``parts``) and ``nodes`` (``node_id``,
    ``degree``) in ``crs``; ``cores`` the ownership polygons in ``crs``; ``stats`` counts of
    the join (``seam_ends``, ``joined_pairs``, ``snapped_to_end``, ``dangling_seam_ends``)."""

    edges: gpd.GeoDataFrame
    nodes: gpd.GeoDataFrame
    crs: object
    cores: List[object]
    stats: Dict[str, int]

    def summary(self) -> Dict[str, float]:
        comps = int(self.edges["component"].nunique()) if len(self.edges) else 0
        return {"total_km": float(self.edges["length_m"].sum() / 1000.0) if len(self.edges)
                else 0.0, "edges": int(len(self.edges)), "nodes": int(len(self.nodes)),
                "components": comps}


# --------------------------------------------------------------------------------------------
# CRS helpers
# --------------------------------------------------------------------------------------------
def _crs(value: object) -> ProjCRS:
    if value is None:
        raise CRSError("merging networks needs a CRS: a part has none")
    try:
        return ProjCRS.from_user_input(value)
    except Exception as exc:  # pyproj CRSError
        raise CRSError(f"unusable CRS {value!r}: {exc}") from exc


def metric_crs_for(crs: object, lonlat_centre: Tuple[float, float]) -> ProjCRS:
    """``crs`` when it is projected in metres, else the UTM zone at ``lonlat_centre``."""
    return metric_crs(_crs(crs), lonlat_centre)


def reproject_geometry(geom, src: object, dst: object, densify: Optional[float] = None):
    """``geom`` from ``src`` to ``dst`` CRS; polygons/lines are first densified to segments of at
    most ``densify`` source units so that straight edges follow the projection."""
    s, d = _crs(src), _crs(dst)
    if s == d:
        return geom
    if densify:
        geom = shapely.segmentize(geom, densify)
    tr = Transformer.from_crs(s, d, always_xy=True)

    def fn(xy: np.ndarray) -> np.ndarray:
        x, y = tr.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    return shapely.transform(geom, fn)


def footprint_polygon(transform, width: int, height: int, col_off: int = 0,
                      row_off: int = 0) -> Polygon:
    """Polygon (raster CRS) of the pixel window ``(col_off, row_off, width, height)`` of a grid
    with affine ``transform`` (any rotation)."""
    t = transform
    corners = [(col_off, row_off), (col_off + width, row_off),
               (col_off + width, row_off + height), (col_off, row_off + height)]
    return Polygon([(t.a * c + t.b * r + t.c, t.d * c + t.e * r + t.f) for c, r in corners])


# --------------------------------------------------------------------------------------------
# ownership
# --------------------------------------------------------------------------------------------
def _closer_half_plane(ci: np.ndarray, cj: np.ndarray, size: float) -> Polygon:
    """Polygon of the points closer to ``cj`` than to ``ci`` (within ``size`` of the midpoint)."""
    n = cj - ci
    n = n / np.hypot(*n)
    t = np.array([-n[1], n[0]])
    m = (ci + cj) / 2.0
    pts = [m - size * t, m + size * t, m + size * t + 2 * size * n, m - size * t + 2 * size * n]
    return Polygon([tuple(p) for p in pts])


def ownership_cores(footprints: Sequence[Polygon],
                    centres: Optional[Sequence[Tuple[float, float]]] = None) -> List[object]:
    """The part of each footprint that it owns (see the module docstring, step 1).

    ``centres`` default to the footprints' centroids. Returns one (Multi)Polygon per footprint,
    possibly empty (a footprint entirely covered by others with nearer centres).
    """
    fps = [shapely.make_valid(f) for f in footprints]
    cs = [np.asarray(c, float) for c in centres] if centres is not None else [
        np.array(f.centroid.coords[0]) for f in fps]
    union_b = unary_union(fps).bounds if fps else (0, 0, 1, 1)
    size = 4.0 * max(union_b[2] - union_b[0], union_b[3] - union_b[1], 1.0)
    tree = shapely.STRtree(fps)
    cores: List[object] = []
    for i, fi in enumerate(fps):
        core = fi
        for j in sorted(int(k) for k in tree.query(fi, predicate="intersects")):
            fj = fps[j]
            if i == j:
                continue
            if np.hypot(*(cs[j] - cs[i])) < 1e-9:  # same centre: the earlier part owns it all
                if j < i:
                    core = core.difference(fj)
                continue
            core = core.difference(fj.intersection(_closer_half_plane(cs[i], cs[j], size)))
            if core.is_empty:
                break
        cores.append(core)
    return cores


# --------------------------------------------------------------------------------------------
# clip, join, rebuild
# --------------------------------------------------------------------------------------------
def _lines_of(geom) -> List[LineString]:
    out: List[LineString] = []
    for g in shapely.get_parts(shapely.line_merge(geom) if geom.geom_type.startswith("Multi")
                               else geom):
        if g.geom_type == "LineString":
            if g.length > _EPS:
                out.append(g)
        elif g.geom_type in ("MultiLineString", "GeometryCollection"):
            out.extend(_lines_of(g))
    return out


@dataclass
class _Piece:
    coords: np.ndarray  # (N, 2) working CRS
    part: int
    width_m: float
    confidence: float
    bridged_m: float

    @property
    def length(self) -> float:
        return float(np.sum(np.hypot(*np.diff(self.coords, axis=0).T)))


def _num(row, name: str) -> float:
    v = row.get(name, float("nan")) if hasattr(row, "get") else float("nan")
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _weighted(values: List[float], weights: List[float]) -> float:
    v = np.asarray(values, float)
    w = np.asarray(weights, float)
    ok = np.isfinite(v) & (w > 0)
    if not ok.any():
        return float("nan")
    return float(np.sum(v[ok] * w[ok]) / np.sum(w[ok]))


def merge_networks(parts: Sequence[NetworkPart], crs: object = None, snap_m: float = 5.0,
                   centres: Optional[Sequence[Tuple[float, float]]] = None) -> MergedNetwork:
    """One network from the ``parts`` (module docstring). ``crs``: output CRS (default the first
    part's edges CRS); ``snap_m``: largest gap in metres joined across a seam; ``centres``
    (output CRS) override the footprint centroids of the ownership rule."""
    if not parts:
        raise ValueError("merge_networks needs at least one part")
    out_crs = _crs(crs if crs is not None else parts[0].edges.crs)
    # working metric CRS from the lon/lat centre of all footprints
    ll_fps = [reproject_geometry(p.footprint, p.footprint_crs or p.edges.crs, "EPSG:4326")
              for p in parts]
    ctr = unary_union(ll_fps).centroid
    work = metric_crs_for(out_crs, (ctr.x, ctr.y))
    fps = []
    for p in parts:
        src = _crs(p.footprint_crs or p.edges.crs)
        dens = None
        if src.is_geographic:
            dens = 1e-4
        else:
            b = p.footprint.bounds
            dens = max(b[2] - b[0], b[3] - b[1]) / 64.0 or None
        fps.append(reproject_geometry(p.footprint, src, work, densify=dens))
    work_centres = None
    if centres is not None:
        tr = Transformer.from_crs(out_crs, work, always_xy=True)
        work_centres = [tr.transform(*c) for c in centres]
    cores = ownership_cores(fps, work_centres)
    union = unary_union(fps)
    outer = union.boundary

    # ---- clip every part to its core ------------------------------------------------------
    pieces: List[_Piece] = []
    for k, (p, core) in enumerate(zip(parts, cores)):
        if core.is_empty or p.edges is None or len(p.edges) == 0:
            continue
        e = p.edges.to_crs(work) if _crs(p.edges.crs) != work else p.edges
        core_p = prep(core)
        for _, row in e.iterrows():
            g = row.geometry
            if g is None or g.is_empty:
                continue
            if core_p.contains(g):
                lines = _lines_of(g)
            else:
                lines = _lines_of(g.intersection(core))
            full = g.length or 1.0
            for ln in lines:
                frac = ln.length / full
                pieces.append(_Piece(np.asarray(ln.coords, float)[:, :2], k,
                                     _num(row, "width_m"), _num(row, "confidence"),
                                     _num(row, "bridged_m") * frac))

    # ---- seam ends: on the boundary of their core, inside the union -----------------------
    core_bounds = [c.boundary for c in cores]
    ends: List[Tuple[int, int]] = []  # (piece index, 0 = start / -1 = end)
    seam: List[bool] = []
    for i, pc in enumerate(pieces):
        for end in (0, -1):
            pt = Point(pc.coords[end])
            on_seam = (core_bounds[pc.part].distance(pt) < _EPS
                       and outer.distance(pt) > _EPS)
            ends.append((i, end))
            seam.append(on_seam)
    stats = {"seam_ends": int(sum(seam)), "joined_pairs": 0, "snapped_to_end": 0,
             "dangling_seam_ends": 0}
    if ends:
        xy = np.array([pieces[i].coords[e] for i, e in ends])
        part_of = np.array([pieces[i].part for i, _ in ends])
        seam_arr = np.array(seam)
        from scipy.spatial import cKDTree

        tree = cKDTree(xy)
        used = np.zeros(len(ends), bool)
        # 1) seam end <-> seam end of another part, closest pairs first
        cand = []
        for a, b in tree.query_pairs(snap_m, output_type="ndarray"):
            if seam_arr[a] and seam_arr[b] and part_of[a] != part_of[b]:
                cand.append((float(np.hypot(*(xy[a] - xy[b]))), int(a), int(b)))
        for _, a, b in sorted(cand):
            if used[a] or used[b]:
                continue
            used[a] = used[b] = True
            mid = (xy[a] + xy[b]) / 2.0
            for idx in (a, b):
                pi, e = ends[idx]
                pieces[pi].coords[e] = mid
            stats["joined_pairs"] += 1
        # 2) remaining seam ends -> nearest end of any kind of another part
        for a in np.flatnonzero(seam_arr & ~used):
            best = None
            for b in tree.query_ball_point(xy[a], snap_m):
                if part_of[b] == part_of[a] or (seam_arr[b] and not used[b]):
                    continue
                d = float(np.hypot(*(xy[a] - xy[b])))
                if best is None or d < best[0]:
                    best = (d, b)
            if best is None:
                stats["dangling_seam_ends"] += 1
                continue
            pi, e = ends[a]
            pieces[pi].coords[e] = xy[best[1]]
            stats["snapped_to_end"] += 1
    # drop pieces that collapsed to a point
    pieces = [p for p in pieces if p.length > _EPS]
    edges_gdf, nodes_gdf = _rebuild(pieces, [p.name for p in parts], work)
    edges_gdf = edges_gdf.to_crs(out_crs)
    nodes_gdf = nodes_gdf.to_crs(out_crs)
    cores_out = [reproject_geometry(c, work, out_crs) for c in cores]
    log.info("merged %d part(s): %s", len(parts), stats)
    return MergedNetwork(edges_gdf, nodes_gdf, out_crs, cores_out, stats)


def _key(pt: np.ndarray) -> Tuple[int, int]:
    return (int(round(pt[0] / _EPS)), int(round(pt[1] / _EPS)))


def _rebuild(pieces: List[_Piece], names: List[str], work: ProjCRS):
    """Node the pieces at shared end points, merge chains through degree-2 points, number the
    nodes and components."""
    node_of: Dict[Tuple[int, int], int] = {}
    node_xy: List[np.ndarray] = []
    ends: List[Tuple[int, int]] = []
    for pc in pieces:
        ids = []
        for e in (0, -1):
            k = _key(pc.coords[e])
            if k not in node_of:
                node_of[k] = len(node_xy)
                node_xy.append(pc.coords[e].copy())
            ids.append(node_of[k])
        ends.append((ids[0], ids[1]))
    incident: Dict[int, List[Tuple[int, int]]] = {}
    for i, (a, b) in enumerate(ends):
        incident.setdefault(a, []).append((i, 0))
        incident.setdefault(b, []).append((i, 1))

    def through(n: int) -> bool:  # a point where exactly two distinct pieces meet
        inc = incident.get(n, [])
        return len(inc) == 2 and inc[0][0] != inc[1][0]

    visited = np.zeros(len(pieces), bool)
    chains: List[List[Tuple[int, bool]]] = []  # (piece, reversed)
    for start in range(len(pieces)):
        if visited[start]:
            continue
        visited[start] = True
        chain = [(start, False)]
        # walk forward from the end of the chain, then backward from its start
        for direction in (1, 0):
            while True:
                if direction == 1:
                    pi, rev = chain[-1]
                    n = ends[pi][0] if rev else ends[pi][1]
                else:
                    pi, rev = chain[0]
                    n = ends[pi][1] if rev else ends[pi][0]
                if not through(n):
                    break
                (qa, ea), (qb, eb) = incident[n]
                q, eq = (qb, eb) if qa == pi else (qa, ea)
                if visited[q]:
                    break
                visited[q] = True
                if direction == 1:  # enters q at its end eq: forward if eq == 0
                    chain.append((q, eq == 1))
                else:  # q precedes: its end at n must be its last point
                    chain.insert(0, (q, eq == 0))
        chains.append(chain)

    rows = []
    for chain in chains:
        parts_xy = []
        for pi, rev in chain:
            c = pieces[pi].coords[::-1] if rev else pieces[pi].coords
            parts_xy.append(c if not parts_xy else c[1:])
        xy = np.vstack(parts_xy)
        # drop repeated points
        keep = np.concatenate([[True], np.hypot(*np.diff(xy, axis=0).T) > _EPS / 10])
        xy = xy[keep]
        if len(xy) < 2:
            continue
        lens = [pieces[pi].length for pi, _ in chain]
        first, last = chain[0], chain[-1]
        u = ends[first[0]][1] if first[1] else ends[first[0]][0]
        v = ends[last[0]][0] if last[1] else ends[last[0]][1]
        part_ids = sorted({pieces[pi].part for pi, _ in chain})
        rows.append({
            "u": u, "v": v,
            "length_m": float(np.sum(np.hypot(*np.diff(xy, axis=0).T))),
            "width_m": _weighted([pieces[pi].width_m for pi, _ in chain], lens),
            "confidence": _weighted([pieces[pi].confidence for pi, _ in chain], lens),
            "bridged_m": float(np.nansum([pieces[pi].bridged_m for pi, _ in chain])),
            "parts": ",".join(names[k] or str(k) for k in part_ids),
            "geometry": LineString(xy),
        })
    # renumber the nodes that remain (merged-through points disappear)
    used_nodes = sorted({r["u"] for r in rows} | {r["v"] for r in rows},
                        key=lambda n: (node_xy[n][0], node_xy[n][1]))
    new_id = {n: i for i, n in enumerate(used_nodes)}
    parent = list(range(len(used_nodes)))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    degree = np.zeros(len(used_nodes), int)
    for r in rows:
        r["u"], r["v"] = new_id[r["u"]], new_id[r["v"]]
        degree[r["u"]] += 1
        degree[r["v"]] += 1
        ra, rb = find(r["u"]), find(r["v"])
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = sorted({find(i) for i in range(len(used_nodes))})
    comp = {r: i for i, r in enumerate(roots)}
    for r in rows:
        r["component"] = comp[find(r["u"])]
    cols = ["u", "v", "length_m", "width_m", "confidence", "bridged_m", "component", "parts"]
    if rows:
        edges = gpd.GeoDataFrame(rows, geometry="geometry", crs=work)
        edges = edges.sort_values(["component", "u", "v"]).reset_index(drop=True)[
            cols + ["geometry"]]
    else:
        edges = gpd.GeoDataFrame({c: [] for c in cols}, geometry=gpd.GeoSeries([], crs=work),
                                 crs=work)
    nodes = gpd.GeoDataFrame(
        {"node_id": np.arange(len(used_nodes), dtype=int), "degree": degree},
        geometry=[Point(node_xy[n]) for n in used_nodes], crs=work)
    return edges, nodes
