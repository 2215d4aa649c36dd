"""Road mask -> centre-line network (nodes and edges) and road-surface polygons.

Pipeline of :func:`vectorize_mask`:

1. clean-up: remove foreground objects smaller than ``min_object_area_m2`` and fill holes smaller
   than ``max_hole_area_m2``;
2. skeletonize (:func:`skimage.morphology.skeletonize`) and trace the skeleton into a graph
   (:func:`gis.graph.skeleton_to_graph`);
3. prune spurs shorter than ``spur_length_m`` that hang off a junction, and contract edges shorter
   than ``junction_merge_m`` between two junctions (one crossing split in two by thinning);
4. bridge gaps: dangling ends join the network when closer than ``gap_m``, or closer than
   ``collinear_gap_m`` and within ``collinear_angle_deg`` of the dangling edge's direction
   (details in :func:`gis.graph.bridge_gaps`), then prune spurs once more;
5. remove components whose total length is below ``min_component_length_m``;
6. simplify each edge with Douglas-Peucker at ``simplify_tolerance_m`` (default: one pixel).

Units: every threshold is in metres (or square metres). Geometry is measured in a metric frame: the
raster's own CRS when it is projected (scaled by its linear unit), otherwise the local UTM zone at
the raster centre (pyproj). For a geographic CRS such as EPSG:4326 the pixel size in metres differs
in x and y (e.g. 0.243 m x 0.300 m at 36 deg N for 2.7e-6 deg pixels); widths are converted across
the local road direction with the pixel -> metre Jacobian, so they honour that anisotropy. Output
geometry is in the raster's CRS.

Memory and time: the mask is processed in horizontal strips (:mod:`gis.maskstrips`): the clean-up
labels each strip and joins components across seams, thinning and distances read each strip with
128 rows of margin, and the skeleton is traced from its pixel list. The result is that of the whole
mask at once for structures narrower than the margin (tested), while memory is bounded by one
strip with its margins (about 16 M pixels) plus the skeleton and the network, which grow with the
length of road rather than with the area: measured 0.43 GB peak for a 5000 x 5000 mask with 83 km
of road (4.6 s) and 0.58 GB for 20000 x 20000 with 1,316 km (80 s), one core. The cleaned mask
waits between passes at one bit per pixel in a temporary file. Vectorize the mosaicked mask (not
per tile) so that lines cross tile boundaries without breaks.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple, Union

import geopandas as gpd
import networkx as nx
import numpy as np
from affine import Affine
from pyproj import CRS as ProjCRS
from pyproj import Transformer
from shapely.geometry import LineString, Point

from gis.errors import CRSError, VectorizeError
from gis.units import metre_factor, utm_crs_for_lonlat
from gis.vectorize_params import VectorizeParams
from gis.graph import (
    attach_metric,
    bridge_gaps,
    douglas_peucker,
    merge_close_junctions,
    merge_degree2,
    path_length,
    prune_spurs,
    remove_small_components,
)
from gis.graph import skeleton_pixels_to_graph as skeleton_to_graph_from_pixels
from gis.maskstrips import (
    MARGIN_PX,
    ArrayMaskSource,
    MaskSource,
    PackedRows,
    RasterMaskSource,
    clean_mask_strips,
    iter_windows,
    pixel_thresholds,
    strip_bounds,
    strip_rows_for,
)

log = logging.getLogger(__name__)

PathLike = Union[str, Path]
ProgressFn = Callable[[int, int, str], None]

__all__ = [
    "VectorizeParams",
    "RoadNetwork",
    "MetricFrame",
    "vectorize_mask",
    "vectorize_source",
    "vectorize_mask_file",
    "mask_to_polygons",
]


class MetricFrame:
    """Maps pixel (row, col) and CRS coordinates of one raster grid to metres.

    ``metric_crs`` is the raster CRS itself when projected (coordinates scaled by its linear unit
    factor) or the UTM zone of the raster centre when geographic.
    """

    def __init__(self, crs: object, transform: Affine, shape: Tuple[int, int]) -> None:
        if crs is None:
            raise CRSError("vectorize needs a CRS: the raster has none")
        try:
            self.crs = ProjCRS.from_user_input(crs)
        except Exception as exc:  # pyproj.exceptions.CRSError
            raise CRSError(f"unusable CRS {crs!r}: {exc}") from exc
        self.transform = Affine(*tuple(transform)[:6])
        h, w = int(shape[0]), int(shape[1])
        self.shape = (h, w)
        self._transformer: Optional[Transformer] = None
        self._scale = 1.0
        if self.crs.is_geographic:
            lon, lat = self._centre_lonlat()
            self.metric_crs = utm_crs_for_lonlat(lon, lat)
            self._transformer = Transformer.from_crs(self.crs, self.metric_crs, always_xy=True)
        elif self.crs.is_projected:
            self.metric_crs = self.crs
            self._scale = metre_factor(self.crs)
        else:
            raise CRSError(f"CRS {self.crs.to_string()} is neither projected nor geographic")
        c = np.array([[h / 2.0, w / 2.0], [h / 2.0, w / 2.0 + 1.0], [h / 2.0 + 1.0, w / 2.0]])
        m = self.rc_to_metric(c)
        #: pixel width and height in metres at the raster centre
        self.pixel_size_m = (float(np.hypot(*(m[1] - m[0]))), float(np.hypot(*(m[2] - m[0]))))

    def _centre_lonlat(self) -> Tuple[float, float]:
        h, w = self.shape
        x, y = self.rc_to_crs(np.array([[h / 2.0 - 0.5, w / 2.0 - 0.5]]))[0]
        to_ll = Transformer.from_crs(self.crs, ProjCRS.from_epsg(4326), always_xy=True)
        lon, lat = to_ll.transform(x, y)
        return float(lon), float(lat)

    def jacobian(self) -> np.ndarray:
        """2x2 pixel -> metre Jacobian at the raster centre.

        Columns: d(x, y)/d col and d(x, y)/d row, in metres per pixel.
        """
        h, w = self.shape
        c = np.array([[h / 2.0, w / 2.0], [h / 2.0, w / 2.0 + 1.0], [h / 2.0 + 1.0, w / 2.0]])
        m = self.rc_to_metric(c)
        return np.column_stack([m[1] - m[0], m[2] - m[0]])

    @property
    def pixel_area_m2(self) -> float:
        return self.pixel_size_m[0] * self.pixel_size_m[1]

    def rc_to_crs(self, rc: np.ndarray) -> np.ndarray:
        """Pixel (row, col) ``(N, 2)`` (centre of pixel (r, c) is (r, c)) -> CRS x, y ``(N, 2)``."""
        rc = np.asarray(rc, dtype=float).reshape(-1, 2)
        t = self.transform
        cols = rc[:, 1] + 0.5
        rows = rc[:, 0] + 0.5
        x = t.a * cols + t.b * rows + t.c
        y = t.d * cols + t.e * rows + t.f
        return np.column_stack([x, y])

    def crs_to_metric(self, xy: np.ndarray) -> np.ndarray:
        """CRS x, y ``(N, 2)`` -> metric x, y ``(N, 2)``."""
        xy = np.asarray(xy, dtype=float).reshape(-1, 2)
        if self._transformer is not None:
            x, y = self._transformer.transform(xy[:, 0], xy[:, 1])
            return np.column_stack([x, y])
        return xy * self._scale

    def rc_to_metric(self, rc: np.ndarray) -> np.ndarray:
        """Pixel (row, col) ``(N, 2)`` -> metric x, y ``(N, 2)``."""
        return self.crs_to_metric(self.rc_to_crs(rc))


@dataclass
class RoadNetwork:
    """Result of :func:`vectorize_mask`.

    ``edges``: LineStrings in ``crs``, each running from node ``u`` to node ``v``, with columns
    ``u``, ``v`` (node ids), ``length_m``,
    ``width_m``, ``confidence`` (mean probability along the edge; NaN without probabilities),
    ``bridged_m`` (metres of the edge that bridge a gap in the mask) and ``component``.
    ``length_m`` is the metric length of the (simplified) output geometry. ``nodes``: Points with
    ``node_id`` and ``degree``. ``graph``: the same network as a MultiGraph (nodes keyed by
    ``node_id``; node attribute ``geometry``; edge attributes as the edge columns plus
    ``geometry``). ``polygons``: optional road-surface polygons (see :func:`mask_to_polygons`).
    """

    edges: gpd.GeoDataFrame
    nodes: gpd.GeoDataFrame
    graph: nx.MultiGraph
    crs: object
    polygons: Optional[gpd.GeoDataFrame] = None
    params: VectorizeParams = field(default_factory=VectorizeParams)
    #: ``None``, or why parts of the mask were not traced (noise / solid road; see
    #: :data:`DEGENERATE_KM_PER_KM2`): ``reason``, ``fraction_of_rows``, ``max_km_per_km2``
    #: and the ``strips`` (row ranges) left out
    degenerate: Optional[Dict[str, object]] = None

    def summary(self) -> Dict[str, float]:
        """``{"total_km", "edges", "nodes", "components"}``."""
        comps = int(self.edges["component"].nunique()) if len(self.edges) else 0
        return {
            "total_km": float(self.edges["length_m"].sum() / 1000.0) if len(self.edges) else 0.0,
            "edges": int(len(self.edges)),
            "nodes": int(len(self.nodes)),
            "components": comps,
        }


#: pixels of border replication before skeletonizing (more than half the widest road expected)
_BORDER_PAD_PX = 64
#: a strip whose centre lines would be denser than this (km of line per km² of strip) holds
#: noise or solid "road", not a road network: the densest real street grids have about
#: 20-40 km/km², a noise mask at 0.3 m about 1,000 and an all-road strip about 3,000
DEGENERATE_KM_PER_KM2 = 200.0
#: ... or, where more than this fraction of a strip is road, a quarter of that density (a mask
#: that is mostly road riddled with holes; a real strip is rarely half road, and then its
#: centre lines are sparse)
DEGENERATE_ROAD_FRACTION = 0.5
#: a strip (of more than 10 x DEGENERATE_MIN_PIXELS pixels) that is more than this fraction
#: road after the clean-up is solid road: not thinned at all
DEGENERATE_SOLID_FRACTION = 0.9
#: strips with fewer skeleton pixels than this are never called degenerate (they cost little)
DEGENERATE_MIN_PIXELS = 10_000


def _pixels(rc: np.ndarray, shape: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """Rounded pixel (rows, cols) of points ``rc``, clipped to a raster of ``shape``."""
    r = np.clip(np.rint(rc[:, 0]).astype(np.int64), 0, shape[0] - 1)
    c = np.clip(np.rint(rc[:, 1]).astype(np.int64), 0, shape[1] - 1)
    return r, c


def _distance_px(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance (pixels, float32 ``(H, W)``) of each mask pixel to the nearest background
    pixel centre; OpenCV's exact (``DIST_MASK_PRECISE``) transform."""
    import cv2

    return cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def _width_m(d: np.ndarray, rc: np.ndarray, jac: np.ndarray) -> float:
    """Road width along an edge in metres: the median over its inner pixels of
    ``2 * distance - 0.5`` pixels, each converted to metres across the local direction.

    ``d`` holds the distances (pixels) sampled at the inner points ``rc[1:-1]``. In pixel space a
    road is a band of perpendicular width ``w_px`` with unit normal ``n``; the pixel -> metre
    Jacobian ``J`` (columns: one column step, one row step) maps it to a band of width
    ``w_px / |J^-T n|``, which is exact for a linear map and honours non-square pixels
    (e.g. a geographic CRS).
    """
    n = len(rc)
    if n < 3:
        return float("nan")
    idx = np.arange(1, n - 1)
    d = np.asarray(d, dtype=float)
    i0 = np.clip(idx - 3, 0, n - 1)
    i1 = np.clip(idx + 3, 0, n - 1)
    t = rc[i1] - rc[i0]  # (drow, dcol)
    norm = np.hypot(t[:, 0], t[:, 1])
    t = t / np.where(norm > 0, norm, 1.0)[:, None]
    normal = np.column_stack([-t[:, 0], t[:, 1]])  # (dcol, drow) of the normal, unit
    jinv_t = np.linalg.inv(jac).T
    scale = np.hypot(*(jinv_t @ normal.T))  # |J^-T n| per sample (1 / metres per pixel)
    # a one-pixel path has no direction: use the mean pixel scale instead of dividing by 0
    scale = np.where(scale > 0, scale, np.sqrt(np.abs(np.linalg.det(jinv_t))))
    w = (2.0 * d - 0.5) / scale
    return float(max(np.median(w), 0.0))


def _empty_outputs(crs: object) -> Tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    edges = gpd.GeoDataFrame(
        {"u": np.array([], int), "v": np.array([], int), "length_m": np.array([], float),
         "width_m": np.array([], float), "confidence": np.array([], float),
         "bridged_m": np.array([], float), "component": np.array([], int)},
        geometry=gpd.GeoSeries([], crs=crs), crs=crs,
    )
    nodes = gpd.GeoDataFrame(
        {"node_id": np.array([], int), "degree": np.array([], int)},
        geometry=gpd.GeoSeries([], crs=crs), crs=crs,
    )
    return edges, nodes


def _strips_of(source: MaskSource, strip_rows: Optional[int]) -> list:
    rows = int(strip_rows) if strip_rows else strip_rows_for(source.width)
    if rows < 1:
        raise ValueError(f"strip_rows must be >= 1, got {strip_rows}")
    return strip_bounds(source.height, rows)


def _skeleton_pixels(store: PackedRows, strips: list, margin: int,
                     check: Callable[[], None], pixel_m: Optional[Tuple[float, float]] = None,
                     degenerate: Optional[list] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Skeleton pixels (rows, cols) of the cleaned mask in ``store``, thinned window by window.

    The border is replicated before thinning so that roads leaving the raster keep their full
    length (thinning treats the outside as background and would retract them by half their width);
    inside the raster a window reaches ``margin`` rows past its strip, so the strip's skeleton is
    that of the whole mask.

    With ``pixel_m`` (pixel width, height in metres) and a ``degenerate`` list, a strip whose
    skeleton is denser than :data:`DEGENERATE_KM_PER_KM2` (and has more than
    :data:`DEGENERATE_MIN_PIXELS` pixels) is left out and described in ``degenerate``: tracing
    noise costs minutes and gigabytes for a "network" that means nothing. Real road masks are
    far below that density, so their network does not change.
    """
    from skimage.morphology import skeletonize

    pad = _BORDER_PAD_PX
    rows, cols = [], []
    line_m = float(np.mean(pixel_m)) if pixel_m else 0.0
    area_m2 = float(pixel_m[0] * pixel_m[1]) if pixel_m else 0.0
    for r0, r1, a, b in iter_windows(strips, store.height, margin):
        win = store.read(a, b)
        inner = win[r0 - a:r1 - a]
        if (degenerate is not None and inner.size > 10 * DEGENERATE_MIN_PIXELS
                and inner.mean() > DEGENERATE_SOLID_FRACTION):
            # thinning a nearly solid strip takes long (seconds per million pixels) and gives a
            # mesh around every pinhole: judged before thinning
            degenerate.append({"rows": [int(r0), int(r1)], "km_per_km2": None,
                               "road_fraction": round(float(inner.mean()), 4)})
            check()
            continue
        if inner.any():  # the skeleton lies inside the mask
            sk = skeletonize(np.pad(win, pad, mode="edge"))[pad:-pad, pad:-pad]
            rr, cc = np.nonzero(sk[r0 - a:r1 - a])
            del sk
            if degenerate is not None and area_m2 > 0 and len(rr) > DEGENERATE_MIN_PIXELS:
                density = len(rr) * line_m / ((r1 - r0) * store.width * area_m2) * 1000.0
                fraction = float(inner.mean())
                if density > DEGENERATE_KM_PER_KM2 or (
                        fraction > DEGENERATE_ROAD_FRACTION
                        and density > DEGENERATE_KM_PER_KM2 / 4):
                    degenerate.append({"rows": [int(r0), int(r1)],
                                       "km_per_km2": round(density, 1),
                                       "road_fraction": round(fraction, 4)})
                    check()
                    continue
            rows.append(rr.astype(np.int32) + np.int32(r0))
            cols.append(cc.astype(np.int32))
        check()
    if not rows:
        return np.zeros(0, np.int32), np.zeros(0, np.int32)
    return np.concatenate(rows), np.concatenate(cols)


def _degenerate_report(strips: list, height: int) -> Optional[Dict[str, object]]:
    """What :attr:`RoadNetwork.degenerate` says about the strips left out (``None``: none)."""
    if not strips:
        return None
    rows = sum(s["rows"][1] - s["rows"][0] for s in strips)
    return {
        "reason": ("noise or solid road, not a road network: over "
                   f"{DEGENERATE_SOLID_FRACTION:.0%} road, or centre lines denser than "
                   f"{DEGENERATE_KM_PER_KM2:g} km/km² (or {DEGENERATE_KM_PER_KM2 / 4:g} where "
                   f"over {DEGENERATE_ROAD_FRACTION:.0%} is road); not traced"),
        "fraction_of_rows": round(rows / max(height, 1), 4),
        "max_km_per_km2": max((s["km_per_km2"] for s in strips if s["km_per_km2"]),
                              default=None),
        "max_road_fraction": max(s["road_fraction"] for s in strips),
        "strips": strips,
    }


def _sample_along_edges(edges: list, source: MaskSource, store: PackedRows, strips: list,
                        margin: int, want_prob: bool,
                        check: Callable[[], None]) -> Tuple[list, list]:
    """Distances (pixels, for widths) and probabilities (NaN without them) at each edge's inner
    points ``rc[1:-1]`` (all its points when it has no inner one), read strip by strip:
    ``(values per edge, values per edge)``."""
    pts = [rc[1:-1] if len(rc) > 2 else rc for rc in edges]
    counts = [len(x) for x in pts]
    r, c = _pixels(np.concatenate(pts) if pts else np.zeros((0, 2)),
                   (source.height, source.width))
    d_val = np.zeros(len(r), dtype=np.float32)
    p_val = np.full(len(r), np.nan, dtype=np.float32)
    order = np.argsort(r, kind="stable")
    r_sorted = r[order]
    for r0, r1, a, b in iter_windows(strips, source.height, margin):
        check()
        i0, i1 = np.searchsorted(r_sorted, [r0, r1])
        if i1 == i0:
            continue
        sel = order[i0:i1]
        dist = _distance_px(store.read(a, b))
        d_val[sel] = dist[r[sel] - a, c[sel]]
        del dist
        if want_prob:
            prob = source.read_probability(r0, r1)
            p_val[sel] = prob[r[sel] - r0, c[sel]]
            del prob
    split = np.cumsum(counts)[:-1]
    return (np.split(d_val, split), np.split(p_val, split)) if edges else ([], [])


def vectorize_source(
    source: MaskSource,
    params: VectorizeParams = VectorizeParams(),
    on_progress: Optional[ProgressFn] = None,
    should_cancel: Optional[Callable[[], bool]] = None,
    *,
    crs: object = None,
    polygons: bool = False,
    strip_rows: Optional[int] = None,
    margin_px: int = MARGIN_PX,
) -> RoadNetwork:
    """Vectorize the road mask of ``source`` (a :class:`gis.maskstrips.MaskSource`) strip by strip.

    Memory stays bounded by a strip and its margins plus the skeleton and the network (which grow
    with the length of road, not with the raster's area); see :mod:`gis.maskstrips`.

    Args:
        source: mask (and optional probability, used for the ``confidence`` column only).
        params: thresholds in metres, see :class:`VectorizeParams`.
        on_progress: ``on_progress(done, total, stage)`` after each stage.
        should_cancel: checked between strips and stages; True raises
            :class:`gis.errors.CancelledError`.
        crs: the CRS to measure and write in (default ``source.crs``).
        polygons: also trace road-surface polygons of the uncleaned mask (``net.polygons``, see
            :func:`mask_to_polygons`).
        strip_rows: rows per strip (default :func:`gis.maskstrips.strip_rows_for` the width).
        margin_px: rows read above and below a strip for thinning and distances.

    Returns:
        :class:`RoadNetwork` with edges and nodes in ``crs``.
    """
    from gis.errors import CancelledError

    crs = source.crs if crs is None else crs
    shape = (source.height, source.width)
    frame = MetricFrame(crs, source.transform, shape)
    strips = _strips_of(source, strip_rows)
    stages = ["clean", "skeleton", "graph", "prune", "bridge", "simplify"]
    total = len(stages) + (1 if polygons else 0)

    def check() -> None:
        if should_cancel is not None and should_cancel():
            raise CancelledError("vectorize cancelled")

    def step(i: int) -> None:
        if on_progress is not None:
            on_progress(i + 1, total, stages[i])
        if should_cancel is not None and should_cancel():
            raise CancelledError(f"vectorize cancelled after stage {stages[i]!r}")

    px_w, px_h = frame.pixel_size_m
    log.debug("vectorize: %dx%d mask in %d strip(s), pixel %.3f x %.3f m, metric CRS %s",
              shape[1], shape[0], len(strips), px_w, px_h, frame.metric_crs.to_string())
    small_obj, max_hole = pixel_thresholds(params.min_object_area_m2, params.max_hole_area_m2,
                                           frame.pixel_area_m2)
    with PackedRows(shape[0], shape[1], in_memory=len(strips) == 1) as store:
        clean_mask_strips(source.read_mask, strips, small_obj, max_hole, store.write, check)
        step(0)
        skipped: list = []
        rows, cols = _skeleton_pixels(store, strips, margin_px, check, frame.pixel_size_m,
                                      skipped)
        degenerate = _degenerate_report(skipped, shape[0])
        if degenerate is not None:
            log.warning("vectorize: %.0f %% of the mask (%d strip(s)) is noise or solid road "
                        "(up to %.0f %% road); those strips are not traced",
                        100 * degenerate["fraction_of_rows"], len(skipped),
                        100 * degenerate["max_road_fraction"])
        jac = frame.jacobian()
        step(1)
        g = skeleton_to_graph_from_pixels(rows, cols, shape)
        del rows, cols
        attach_metric(g, frame.rc_to_metric)
        merge_degree2(g)
        step(2)
        prune_spurs(g, params.spur_length_m)
        if params.junction_merge_m > 0 and merge_close_junctions(g, params.junction_merge_m):
            merge_degree2(g)
        step(3)
        if params.gap_m > 0 or params.collinear_gap_m > 0:
            if bridge_gaps(g, frame.rc_to_metric, params.gap_m, params.collinear_gap_m,
                           params.collinear_angle_deg, params.direction_probe_m):
                merge_degree2(g)
                # a bridge into the side of an edge can leave a short stub beyond it: prune again
                prune_spurs(g, params.spur_length_m)
                if params.junction_merge_m > 0 and merge_close_junctions(
                        g, params.junction_merge_m):
                    merge_degree2(g)
        remove_small_components(g, params.min_component_length_m)
        step(4)
        edge_list = list(g.edges(keys=True, data=True))
        dists, probs = _sample_along_edges([d["rc"] for _, _, _, d in edge_list], source, store,
                                           strips, margin_px, source.has_probability, check)
    tol = params.simplify_tolerance_m
    if tol is None:
        tol = max(px_w, px_h)

    # renumber nodes 0..n-1, build output tables
    ids = {n: i for i, n in enumerate(sorted(g.nodes, key=lambda n: tuple(g.nodes[n]["rc"])))}
    comp_of: Dict[object, int] = {}
    comps = sorted(nx.connected_components(g), key=lambda c: min(ids[n] for n in c))
    for ci, comp in enumerate(comps):
        for n in comp:
            comp_of[n] = ci
    out = nx.MultiGraph()
    node_rows = []
    for n in sorted(g.nodes, key=lambda n: ids[n]):
        xy = frame.rc_to_crs(g.nodes[n]["rc"])[0]
        geom = Point(xy)
        deg = int(g.degree(n))
        out.add_node(ids[n], geometry=geom, degree=deg)
        node_rows.append((ids[n], deg, geom))
    edge_rows = []
    for (u, v, _k, d), dist_e, prob_e in zip(edge_list, dists, probs):
        a = d["start"]
        b = v if a == u else u
        rc, mxy = d["rc"], d["xy"]
        keep = douglas_peucker(mxy, tol) if tol > 0 else np.arange(len(rc))
        coords = frame.rc_to_crs(rc[keep])
        # exact shared node coordinates at both ends
        coords[0] = frame.rc_to_crs(g.nodes[a]["rc"])[0]
        coords[-1] = frame.rc_to_crs(g.nodes[b]["rc"])[0]
        if len(coords) < 2:
            continue
        width = _width_m(dist_e, rc, jac)
        if source.has_probability and np.isfinite(prob_e).any():
            conf = float(np.nanmean(prob_e))
        else:
            conf = float("nan")
        geom = LineString(coords)
        length = path_length(frame.crs_to_metric(coords))
        attrs = dict(
            u=ids[a], v=ids[b], length_m=length, width_m=width, confidence=conf,
            bridged_m=float(min(d.get("bridged_m", 0.0), length)), component=comp_of[a],
        )
        out.add_edge(ids[a], ids[b], geometry=geom, **attrs)
        edge_rows.append({**attrs, "geometry": geom})
    step(5)

    edges, nodes = _empty_outputs(crs)
    crs_out = frame.crs
    if edge_rows:
        edges = gpd.GeoDataFrame(edge_rows, geometry="geometry", crs=crs_out)
        edges = edges.sort_values(["component", "u", "v"]).reset_index(drop=True)
    else:
        edges = edges.set_crs(crs_out, allow_override=True)
    if node_rows:
        nodes = gpd.GeoDataFrame(
            {"node_id": [r[0] for r in node_rows], "degree": [r[1] for r in node_rows]},
            geometry=[r[2] for r in node_rows], crs=crs_out,
        )
    else:
        nodes = nodes.set_crs(crs_out, allow_override=True)
    net = RoadNetwork(edges=edges, nodes=nodes, graph=out, crs=crs_out, params=params,
                      degenerate=degenerate)
    if polygons:
        net.polygons = _polygons_of(source, frame, params.simplify_tolerance_m, strips, check)
        if on_progress is not None:
            on_progress(total, total, "polygons")
    log.info("vectorized: %s", net.summary())
    return net


def vectorize_mask(
    mask: np.ndarray,
    transform: Affine,
    crs: object,
    probability: Optional[np.ndarray] = None,
    params: VectorizeParams = VectorizeParams(),
    on_progress: Optional[ProgressFn] = None,
    should_cancel: Optional[Callable[[], bool]] = None,
    *,
    strip_rows: Optional[int] = None,
) -> RoadNetwork:
    """Vectorize a binary road mask into a centre-line network.

    Args:
        mask: ``(H, W)`` bool or integer, non-zero = road.
        transform: the raster's affine transform (pixel -> ``crs``).
        crs: the raster's CRS (anything pyproj accepts: EPSG code, WKT, rasterio CRS).
        probability: optional ``(H, W)`` float 0..1 (NaN = no data) or uint8 ``0..254`` with 255 =
            nodata (the :mod:`gis.mosaic` encoding); used for the ``confidence`` column only.
        params: thresholds in metres, see :class:`VectorizeParams`.
        on_progress: ``on_progress(done, total, stage)`` after each stage.
        should_cancel: checked between strips and stages; True raises
            :class:`gis.errors.CancelledError`.
        strip_rows: rows per strip (see :func:`vectorize_source`).

    Returns:
        :class:`RoadNetwork` with edges and nodes in ``crs``.
    """
    source = ArrayMaskSource(mask, transform, crs, probability)
    return vectorize_source(source, params, on_progress, should_cancel, strip_rows=strip_rows)


def _valid_polygons(geoms: np.ndarray) -> np.ndarray:
    """``geoms`` with each invalid polygon replaced by its valid parts. GDAL's 8-connected
    polygons can pinch at a corner (two lobes joined by diagonal pixels), which is not a valid
    Simple Features polygon; such lobes become separate polygons, whichever strip they lie in."""
    import shapely

    bad = ~shapely.is_valid(geoms)
    if not bad.any():
        return geoms
    out = list(geoms[~bad])
    for g in shapely.get_parts(shapely.make_valid(geoms[bad])):
        if g.geom_type == "Polygon":
            out.append(g)
        elif g.geom_type in ("MultiPolygon", "GeometryCollection"):
            out.extend(p for p in shapely.get_parts(g) if p.geom_type == "Polygon")
    return np.array(out, dtype=object)


def _polygons_of(source: MaskSource, frame: MetricFrame, simplify_tolerance_m: Optional[float],
                 strips: list, check: Callable[[], None]) -> gpd.GeoDataFrame:
    """Road-surface polygons of ``source``'s mask, traced strip by strip; pieces that touch a
    strip seam are dissolved into whole polygons afterwards."""
    import shapely
    from rasterio import features
    from shapely.geometry import shape as to_shape

    # traced in pixel coordinates (exact integers), so that pieces meeting at a seam share their
    # boundary exactly and dissolve; mapped to the CRS afterwards
    done, pending = [], []
    last = len(strips) - 1
    for k, (r0, r1) in enumerate(strips):
        m = source.read_mask(r0, r1)
        if m.any():
            geoms = np.array([to_shape(s) for s, val in
                              features.shapes(m.astype(np.uint8), mask=m, connectivity=8,
                                              transform=Affine.translation(0, r0))
                              if val == 1], dtype=object)
            geoms = _valid_polygons(geoms)
            box = shapely.bounds(geoms)
            touch = ((box[:, 1] <= r0) & (k > 0)) | ((box[:, 3] >= r1) & (k < last))
            done.extend(geoms[~touch].tolist())
            pending.extend(geoms[touch].tolist())
        check()
    if pending:
        done.extend(shapely.get_parts(shapely.union_all(np.array(pending, dtype=object))).tolist())
    t = frame.transform

    def to_crs(cr: np.ndarray) -> np.ndarray:
        return np.column_stack([t.a * cr[:, 0] + t.b * cr[:, 1] + t.c,
                                t.d * cr[:, 0] + t.e * cr[:, 1] + t.f])

    done = shapely.transform(np.array(done, dtype=object), to_crs).tolist() if done else []
    gdf = gpd.GeoDataFrame({"poly_id": np.arange(len(done), dtype=int)}, geometry=done,
                           crs=frame.crs)
    if not len(gdf):
        gdf["area_m2"] = np.array([], float)
        return gdf
    metric = gdf.to_crs(frame.metric_crs) if frame._transformer is not None else gdf
    tol = max(frame.pixel_size_m) if simplify_tolerance_m is None else simplify_tolerance_m
    if frame._transformer is None and frame._scale != 1.0:
        tol_native = tol / frame._scale
        area = gdf.geometry.area * frame._scale ** 2
    else:
        tol_native = tol
        area = metric.geometry.area
    if tol > 0:
        simplified = metric.geometry.simplify(tol_native, preserve_topology=True)
        if frame._transformer is not None:
            simplified = gpd.GeoSeries(simplified, crs=frame.metric_crs).to_crs(frame.crs)
        gdf = gdf.set_geometry(gpd.GeoSeries(simplified.values, crs=frame.crs))
    gdf["area_m2"] = np.asarray(area, dtype=float)
    return gdf[["poly_id", "area_m2", "geometry"]]


def mask_to_polygons(
    mask: np.ndarray,
    transform: Affine,
    crs: object,
    simplify_tolerance_m: Optional[float] = None,
    *,
    strip_rows: Optional[int] = None,
) -> gpd.GeoDataFrame:
    """Road-surface polygons of a binary mask (``rasterio.features.shapes``, 8-connected).

    Args:
        mask: ``(H, W)`` bool or integer, non-zero = road.
        transform, crs: the raster's grid.
        simplify_tolerance_m: Douglas-Peucker tolerance in metres applied in the metric frame
            (local UTM for a geographic CRS); None = one pixel, 0 = no simplification.
        strip_rows: rows per strip (pieces meeting at a seam are dissolved; two pixels that touch
            only diagonally across a seam stay two polygons).

    Returns:
        GeoDataFrame in ``crs`` with columns ``poly_id``, ``area_m2`` and Polygon geometries.
    """
    source = ArrayMaskSource(mask, transform, crs)
    frame = MetricFrame(crs, source.transform, (source.height, source.width))
    return _polygons_of(source, frame, simplify_tolerance_m, _strips_of(source, strip_rows),
                        lambda: None)


def vectorize_mask_file(
    mask_tif: Optional[PathLike],
    prob_tif: Optional[PathLike] = None,
    params: VectorizeParams = VectorizeParams(),
    polygons: bool = False,
    on_progress: Optional[ProgressFn] = None,
    should_cancel: Optional[Callable[[], bool]] = None,
    *,
    strip_rows: Optional[int] = None,
) -> RoadNetwork:
    """Vectorize a mask GeoTIFF (band 1, road where value > 0 and not nodata) or, without
    ``mask_tif``, the probability GeoTIFF ``prob_tif`` thresholded at ``params.threshold``; the
    probability (float 0..1 or uint8 0..254 with 255 = nodata, on the mask's grid) feeds the
    ``confidence`` column. Read strip by strip (see :func:`vectorize_source`).

    With ``polygons=True`` the result also carries road-surface polygons of the mask (before
    clean-up; see :func:`mask_to_polygons`).
    """
    if mask_tif is None and prob_tif is None:
        raise VectorizeError("vectorize needs a mask or a probability raster")
    if mask_tif is None:
        source = RasterMaskSource(prob_tif, mask_is_probability=True, threshold=params.threshold)
    else:
        source = RasterMaskSource(mask_tif, prob_path=prob_tif)
    with source:
        if source.crs is None:
            raise CRSError(f"{mask_tif or prob_tif}: raster has no CRS")
        return vectorize_source(source, params, on_progress, should_cancel, polygons=polygons,
                                strip_rows=strip_rows)
