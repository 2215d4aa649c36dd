"""Road networks to vector files: vectorize a mask, write an (edited) network, read one back.

Every writer stages its files (:class:`app.service.staging.Staging`) and commits the whole set at
once, so a failed run leaves earlier files untouched. Rasters without CRS are vectorized in a
stand-in metric frame (1 px = 1 m) and written in :data:`PIXEL_CRS_WKT` (pixel units).
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from app.service.errors import EXPECTED_ERRORS, UserError, as_user_error, disk_full_error
from app.service.requests import (FORMATS, CancelFn, PathLike, ProgressFn, VectorizeResult,
                                  stage_progress)
from app.service.staging import Staging, missing_dir, refuse_existing
from app.service.staging import recover as recover_outputs
from gis.errors import OutputDirError
# from its defining module (the one app.service.requests re-exports), so that ruff's B008 list
# of immutable calls recognises the frozen dataclass as a safe default argument
from gis.vectorize_params import VectorizeParams

__all__ = ["PIXEL_CRS_WKT", "vectorize_mask", "export_network", "read_network"]

log = logging.getLogger(__name__)

#: CRS used internally to vectorize rasters without CRS (1 pixel = 1 unit); never written out
_PIXEL_FRAME_CRS = "EPSG:3857"
#: engineering CRS (pixel units, rows down) given to vectors of rasters without CRS
PIXEL_CRS_WKT = (
    'ENGCRS["raster pixel grid",EDATUM["raster pixels"],CS[Cartesian,2],'
    'AXIS["column (x)",east,ORDER[1],LENGTHUNIT["pixel",1]],'
    'AXIS["row (y)",south,ORDER[2],LENGTHUNIT["pixel",1]]]'
)


def crs_string(crs: Any, wkt: bool = False) -> Optional[str]:
    """``EPSG:n`` where the CRS has an EPSG code, else its PROJ string (``wkt``: its WKT)."""
    if crs is None:
        return None
    try:
        epsg = crs.to_epsg()
    except Exception:  # noqa: BLE001
        epsg = None
    if epsg:
        return f"EPSG:{epsg}"
    try:
        return crs.to_wkt() if wkt else crs.to_string()
    except Exception:  # noqa: BLE001
        return str(crs)


def check_crs(value: Optional[str], what: str) -> Optional[str]:
    if value is None:
        return None
    from pyproj import CRS as ProjCRS
    from pyproj.exceptions import CRSError as ProjCRSError

    try:
        ProjCRS.from_user_input(value)
    except ProjCRSError as exc:
        raise UserError(f"{what} {value!r} is not a CRS pyproj understands") from exc
    return value


def _role_for(name: str, stem: str) -> str:
    """Key of an output file: its name without the ``<stem>_`` / ``<stem>.`` prefix
    (``img_prob.tif`` -> ``prob.tif``, ``roads.gpkg`` -> ``gpkg``)."""
    if name.startswith(stem) and len(name) > len(stem) and name[len(stem)] in "._":
        return name[len(stem) + 1:]
    return name


def vector_targets(main: Path, formats: Sequence[str], polygons: bool) -> List[Path]:
    """Files ``gis.vector_io.write_vectors`` produces for ``main``'s stem in each format
    (GeoPackage: one file; Shapefile/GeoJSON: one file per layer)."""
    from gis.vector_io import layer_paths

    layers = ["edges", "nodes"] + (["polygons"] if polygons else [])
    out: List[Path] = []
    for fmt in formats:
        out.extend(dict.fromkeys(layer_paths(main.with_suffix(f".{fmt}"), layers).values()))
    return out


def inference_mask_source(inf: Any):
    """The mask (band 1 non-zero = road) and road probability of the inference outputs, read strip
    by strip (:class:`gis.maskstrips.RasterMaskSource`)."""
    from gis.maskstrips import RasterMaskSource

    prob_path = inf.prob_path if inf.num_classes in (1, 2) else None
    return RasterMaskSource(inf.mask_path, prob_path=prob_path,
                            prob_band=1 if inf.num_classes == 1 else 2)


def vectorize_mask_source(source: Any, params: VectorizeParams, polygons: bool,
                      on_progress: Optional[ProgressFn], should_cancel: Optional[CancelFn]):
    """:func:`gis.vectorize.vectorize_source` (+ polygons) of a mask source, closed afterwards;
    rasters without CRS are vectorized in a stand-in metric frame (1 px = 1 m) and returned in
    :data:`PIXEL_CRS_WKT`."""
    from gis.vectorize import vectorize_source

    with source:
        crs = source.crs
        frame_crs = crs if crs is not None else _PIXEL_FRAME_CRS
        net = vectorize_source(source, params, on_progress, should_cancel, crs=frame_crs,
                               polygons=polygons)
    if crs is None:
        net.edges = net.edges.set_crs(PIXEL_CRS_WKT, allow_override=True)
        net.nodes = net.nodes.set_crs(PIXEL_CRS_WKT, allow_override=True)
        if net.polygons is not None:
            net.polygons = net.polygons.set_crs(PIXEL_CRS_WKT, allow_override=True)
        net.crs = net.edges.crs
    return net


def is_pixel_crs(crs: Any) -> bool:
    if crs is None:
        return True
    from pyproj import CRS as ProjCRS

    pc = ProjCRS.from_user_input(crs)
    return not (pc.is_projected or pc.is_geographic)


def check_pixel_formats(pixel: bool, formats: Sequence[str], target_crs: Optional[str],
                         what: str) -> None:
    if not pixel:
        return
    if target_crs is not None:
        raise UserError(f"{what}: no CRS (pixel coordinates), cannot reproject to {target_crs}")
    if "geojson" in formats:
        raise UserError(f"{what}: no CRS (pixel coordinates); GeoJSON needs lon/lat, "
                        "use gpkg or shp")


def write_network(net: Any, staging: Staging, stem: str, formats: Sequence[str],
                   target_crs: Optional[str], progress: ProgressFn, done0: int, total: int) -> int:
    from gis.vector_io import write_vectors

    done = done0
    for fmt in formats:
        path = staging.path(f"{stem}_roads.{fmt}")
        # GeoJSON is always lon/lat (RFC 7946): the target CRS applies to the other formats
        write_vectors(net, path, target_crs=None if fmt == "geojson" else target_crs,
                      overwrite=False, style=True)
        done += 1
        progress(done, total, "write")
    return done


def network_summary(net: Any) -> Dict[str, Any]:
    s = net.summary()
    return {"road_km": float(s.get("total_km", 0.0)), "edges": int(s.get("edges", 0)),
            "nodes": int(s.get("nodes", 0)), "components": int(s.get("components", 0)),
            "polygons": None if net.polygons is None else int(len(net.polygons)),
            # parts of the mask that are noise or solid road, not traced (gis.vectorize)
            "degenerate_mask": getattr(net, "degenerate", None)}


def outputs_by_role(paths: Iterable[Path], stem: str) -> Dict[str, str]:
    return {_role_for(p.name, stem): str(p) for p in paths}


def _formats_for(out_path: Path, formats: Optional[Sequence[str]]) -> Tuple[str, ...]:
    main = out_path.suffix.lower().lstrip(".")
    if main not in FORMATS:
        raise UserError(f"{out_path}: unknown vector format {out_path.suffix or '(no suffix)'!r} "
                        f"(use {', '.join('.' + f for f in FORMATS)})")
    extra = [str(f).lower().lstrip(".") for f in (formats or ())]
    bad = [f for f in extra if f not in FORMATS]
    if bad:
        raise UserError(f"unknown output format {bad[0]!r} (choose from {', '.join(FORMATS)})")
    return tuple(dict.fromkeys([main] + extra))


def _write_vectors_atomically(net: Any, out_path: Path, formats: Sequence[str],
                              target_crs: Optional[str], overwrite: bool,
                              on_progress: Optional[ProgressFn] = None) -> List[Path]:
    target_crs = check_crs(target_crs, "target CRS")
    check_pixel_formats(is_pixel_crs(net.crs), formats, target_crs, str(out_path))
    stem = out_path.stem
    recover_outputs(out_path.parent)
    refuse_existing(vector_targets(out_path, formats, net.polygons is not None), overwrite)
    staging = Staging(out_path.parent)
    ok = False
    progress = stage_progress(on_progress)
    try:
        from gis.vector_io import write_vectors

        for i, fmt in enumerate(formats):
            write_vectors(net, staging.path(f"{stem}.{fmt}"),
                          target_crs=None if fmt == "geojson" else target_crs,
                          overwrite=False, style=True)
            progress(i + 1, len(formats), "write")
        committed = staging.commit(overwrite)
        ok = True
        return committed
    finally:
        staging.discard(failed=not ok)


def vectorize_mask(
    mask_path: PathLike,
    out_path: PathLike,
    params: VectorizeParams = VectorizeParams(),
    formats: Optional[Sequence[str]] = None,
    overwrite: bool = False,
    *,
    probability: bool = False,
    prob_path: Optional[PathLike] = None,
    polygons: bool = False,
    target_crs: Optional[str] = None,
    allow_pixel_coords: bool = False,
    on_progress: Optional[ProgressFn] = None,
    should_cancel: Optional[CancelFn] = None,
) -> VectorizeResult:
    """Vectorize an existing road mask (or probability) GeoTIFF into vector files.

    Args:
        mask_path: band 1 is the mask (non-zero and not nodata = road), or with
            ``probability=True`` a probability raster (float 0..1, or uint8 0..254 with 255
            nodata as written by the extraction) thresholded at ``params.threshold``.
        out_path: main output; its suffix (``.gpkg``/``.shp``/``.geojson``) picks the format.
        params: thresholds in metres.
        formats: extra formats written beside ``out_path`` with the same stem.
        overwrite: replace existing outputs.
        prob_path: optional probability raster on the mask's grid (edge ``confidence``).
        polygons: also write road-surface polygons.
        target_crs: CRS of the outputs (default the raster's).
        allow_pixel_coords: accept a raster without CRS (outputs in pixel coordinates).
        on_progress: stages ``vectorize`` and ``write``.

    Returns:
        :class:`VectorizeResult` (files by role and a summary).

    Raises:
        UserError: unreadable input, no CRS, existing output, bad format; nothing is left behind.
    """
    from gis.io import open_raster
    from gis.maskstrips import RasterMaskSource

    progress = stage_progress(on_progress)
    out = Path(out_path)
    try:
        fmts = _formats_for(out, formats)
        refuse_existing(vector_targets(out, fmts, polygons), overwrite)
        if not out.parent.is_dir():
            raise OutputDirError(missing_dir(out))
        open_raster(mask_path, allow_pixel_coords=allow_pixel_coords)  # readable, CRS or allowed
        if probability:
            source = RasterMaskSource(mask_path, mask_is_probability=True,
                                      threshold=params.threshold)
        else:
            source = RasterMaskSource(mask_path, prob_path=prob_path)
        net = vectorize_mask_source(source, params, polygons,
                                lambda d, t, s: progress(d, t, "vectorize"), should_cancel)
        written = _write_vectors_atomically(net, out, fmts, target_crs, overwrite, progress)
    except UserError:
        raise
    except EXPECTED_ERRORS + (ValueError, OSError) as exc:
        raise (disk_full_error(exc, out) or as_user_error(exc)) from exc
    except Exception as exc:
        full = disk_full_error(exc, out)
        if full is None:
            raise
        raise full from exc
    summary = network_summary(net)
    summary.update({"source": str(mask_path), "crs": crs_string(net.crs),
                    "parameters": dataclasses.asdict(params)})
    return VectorizeResult(outputs_by_role(written, out.stem), summary)


def _graph_from_tables(edges: Any, nodes: Any):
    import networkx as nx

    g = nx.MultiGraph()
    if "node_id" in nodes.columns:
        for nid, geom in zip(nodes["node_id"], nodes.geometry):
            g.add_node(int(nid), geometry=geom)
    if {"u", "v"} <= set(edges.columns):
        for _, row in edges.iterrows():
            g.add_edge(int(row["u"]), int(row["v"]), **row.to_dict())
    return g


def export_network(
    edges: Any,
    nodes: Any,
    path: PathLike,
    target_crs: Optional[str] = None,
    overwrite: bool = False,
    *,
    formats: Optional[Sequence[str]] = None,
    polygons: Any = None,
) -> VectorizeResult:
    """Write an (edited) network held as GeoDataFrames, e.g. from the GUI's editor.

    Args:
        edges: GeoDataFrame of LineStrings (columns as :class:`gis.vectorize.RoadNetwork`;
            ``length_m`` is recomputed for edited geometry when a CRS is set).
        nodes: GeoDataFrame of Points (``node_id``, ``degree``); may be empty.
        path: main output (``.gpkg``/``.shp``/``.geojson``); ``formats`` adds more beside it.
        target_crs: CRS of the files (default the edges' CRS).
        overwrite: replace existing files.
        polygons: optional road-surface polygon GeoDataFrame.

    Raises:
        UserError: bad format, existing output, unwritable file.
    """
    import geopandas as gpd

    from gis.vectorize import RoadNetwork, VectorizeParams as _VP

    out = Path(path)
    try:
        fmts = _formats_for(out, formats)
        if not isinstance(edges, gpd.GeoDataFrame) or not isinstance(nodes, gpd.GeoDataFrame):
            raise UserError("export_network needs GeoDataFrames of edges and nodes")
        if edges.crs is not None and nodes.crs is not None and edges.crs != nodes.crs \
                and len(nodes):
            nodes = nodes.to_crs(edges.crs)
        edges = edges.copy()
        if edges.crs is None:
            edges = edges.set_crs(PIXEL_CRS_WKT)
            nodes = nodes.set_crs(PIXEL_CRS_WKT, allow_override=True)
        if len(edges):
            from gis.units import bounds_centre_lonlat, metre_factor, metric_crs

            factor = metre_factor(edges.crs)
            if is_pixel_crs(edges.crs):
                edges["length_m"] = edges.geometry.length  # pixel units
            elif factor is not None:
                edges["length_m"] = edges.geometry.length * factor
            else:
                utm = metric_crs(edges.crs, bounds_centre_lonlat(edges.crs, edges.total_bounds))
                edges["length_m"] = edges.to_crs(utm).geometry.length
        if "component" not in edges.columns:
            edges["component"] = 0
        net = RoadNetwork(edges=edges, nodes=nodes, graph=_graph_from_tables(edges, nodes),
                          crs=edges.crs, polygons=polygons, params=_VP())
        if not out.parent.is_dir():
            raise OutputDirError(missing_dir(out))
        written = _write_vectors_atomically(net, out, fmts, target_crs, overwrite)
    except UserError:
        raise
    except EXPECTED_ERRORS + (ValueError, OSError) as exc:
        raise as_user_error(exc) from exc
    import networkx as nx

    summary = network_summary(net)
    summary["components"] = int(nx.number_connected_components(net.graph))
    summary["crs"] = crs_string(net.crs)
    return VectorizeResult(outputs_by_role(written, out.stem), summary)


def read_network(path: PathLike) -> Tuple[Any, Any]:
    """``(edges, nodes)`` GeoDataFrames of a written network, for display and editing.

    ``path``: a ``.gpkg`` with layers ``edges``/``nodes``, or the main name of a Shapefile/GeoJSON
    set (``roads.shp`` -> ``roads_edges.shp``, ``roads_nodes.shp``; an ``*_edges.*`` file is
    accepted too). A missing nodes layer gives an empty table.

    Raises:
        UserError: missing or unreadable file.
    """
    import geopandas as gpd

    p = Path(path)
    if p.suffix.lower() == ".gpkg":
        sources = {"edges": (p, "edges"), "nodes": (p, "nodes")}
    else:
        stem = p.stem[:-len("_edges")] if p.stem.endswith("_edges") else p.stem
        sources = {n: (p.with_name(f"{stem}_{n}{p.suffix}"), None) for n in ("edges", "nodes")}
    out = {}
    for name, (f, layer) in sources.items():
        if not f.exists():
            if name == "nodes" and out:
                out[name] = gpd.GeoDataFrame({"node_id": [], "degree": []}, geometry=[],
                                             crs=out["edges"].crs)
                continue
            raise UserError(f"{f}: file not found")
        try:
            out[name] = gpd.read_file(f, layer=layer) if layer else gpd.read_file(f)
        except Exception as exc:  # noqa: BLE001 - pyogrio raises several types
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UserError(f"{f}: cannot read {name} ({msg})") from exc
    return out["edges"], out["nodes"]
