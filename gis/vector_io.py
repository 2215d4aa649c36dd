"""Write road networks (and any GeoDataFrames) to GeoPackage, Shapefile or GeoJSON, with styles.

Driver by extension of ``path``:

* ``.gpkg``: one file, one layer per table (``edges``, ``nodes`` and ``polygons`` when present).
  The default style of every layer is stored in the GeoPackage's ``layer_styles`` table (the table
  QGIS reads default styles from), and ``.qml`` sidecars ``<stem>_<layer>.qml`` are written beside
  the file.
* ``.shp``: one Shapefile per layer, named ``<stem>_<layer>.shp`` (e.g. ``roads.shp`` ->
  ``roads_edges.shp``, ``roads_nodes.shp``) with ``.shx``, ``.dbf``, ``.prj`` and a ``.cpg`` saying
  UTF-8, plus ``<stem>_<layer>.qml`` (QGIS loads a same-named ``.qml`` as the default style).
* ``.geojson`` / ``.json``: one file per layer, ``<stem>_<layer>.geojson``, always in WGS84
  (EPSG:4326, lon/lat) as RFC 7946 requires: layers are reprojected and ``target_crs`` must be
  None or EPSG:4326. ``.qml`` sidecars as for Shapefiles.

A single GeoDataFrame (not a network or a mapping) is written as one layer named after the stem,
to exactly ``path``. Field names are at most 10 characters, so Shapefiles keep them.

Everything is written into a temporary directory beside the output and moved into place once all
layers are complete; an existing output is refused with :class:`gis.errors.OutputExistsError`
unless ``overwrite=True``.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import sqlite3
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Mapping, Optional, Union

import numpy as np

from gis import styles
from gis.errors import CRSError, OutputDirError, OutputExistsError, VectorWriteError

if TYPE_CHECKING:  # imported where used: layer_paths runs before the first tile, and
    import geopandas as gpd  # geopandas costs ~0.3-1 s to import

log = logging.getLogger(__name__)

PathLike = Union[str, Path]

__all__ = ["write_vectors", "layer_paths", "style_for_layer", "DRIVERS"]

#: extension -> OGR driver
DRIVERS = {".gpkg": "GPKG", ".shp": "ESRI Shapefile", ".geojson": "GeoJSON", ".json": "GeoJSON"}
_SHP_PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg", ".qml", ".qix", ".sbn", ".sbx")
_GEOM_TYPES = {"edges": "LineString", "nodes": "Point", "polygons": "Polygon"}


def _layers(obj: object, path: Path) -> Dict[str, gpd.GeoDataFrame]:
    import geopandas as gpd

    if isinstance(obj, gpd.GeoDataFrame):
        return {path.stem: obj}
    if isinstance(obj, Mapping):
        out = {str(k): v for k, v in obj.items() if v is not None}
    elif hasattr(obj, "edges") and hasattr(obj, "nodes"):
        out = {"edges": obj.edges, "nodes": obj.nodes}
        if getattr(obj, "polygons", None) is not None:
            out["polygons"] = obj.polygons
    else:
        raise TypeError(f"write_vectors needs a RoadNetwork, a GeoDataFrame or a mapping of them, "
                        f"got {type(obj).__name__}")
    for name, gdf in out.items():
        if not isinstance(gdf, gpd.GeoDataFrame):
            raise TypeError(f"layer {name!r} is {type(gdf).__name__}, not a GeoDataFrame")
    return out


def _driver(path: Path) -> str:
    try:
        return DRIVERS[path.suffix.lower()]
    except KeyError:
        raise VectorWriteError(
            f"{path}: unknown vector format {path.suffix!r} (use {', '.join(sorted(DRIVERS))})"
        ) from None


def layer_paths(path: PathLike, layer_names, single: bool = False) -> Dict[str, Path]:
    """Where each layer of ``write_vectors(..., path)`` goes (see the module docstring)."""
    p = Path(path)
    if _driver(p) == "GPKG" or single:
        return {name: p for name in layer_names}
    return {name: p.with_name(f"{p.stem}_{name}{p.suffix}") for name in layer_names}


def _sidecar(path: Path, layer: str, driver: str, single: bool) -> Path:
    if driver == "GPKG":
        # not loaded automatically (layer_styles is); distinct from the Shapefile sidecars
        name = f"{path.stem}.gpkg.qml" if single else f"{path.stem}_{layer}.gpkg.qml"
        return path.with_name(name)
    return path.with_suffix(".qml")


def style_for_layer(name: str, gdf: gpd.GeoDataFrame) -> Optional[str]:
    """QML for a layer by name: ``edges`` graduated by ``confidence`` when it has values (or no
    feature at all), else by ``width_m`` over its data range; ``nodes`` by ``degree``;
    ``polygons`` a fill; other layers by geometry type (lines by ``confidence``/``width_m`` when
    present). None when nothing fits."""
    geom = _GEOM_TYPES.get(name)
    if geom is None and len(gdf):
        gt = str(gdf.geom_type.iloc[0])
        geom = "LineString" if "Line" in gt else "Point" if "Point" in gt else "Polygon"
    if geom == "LineString":
        if "confidence" in gdf and np.isfinite(gdf["confidence"].astype(float)).any():
            return styles.edges_qml("confidence")
        if "width_m" in gdf and np.isfinite(gdf["width_m"].astype(float)).any():
            w = gdf["width_m"].astype(float)
            lo, hi = float(np.nanmin(w)), float(np.nanmax(w))
            lo, hi = math.floor(lo * 10) / 10, math.ceil(hi * 10) / 10
            return styles.edges_qml("width_m", styles.graduated_breaks(lo, hi, 5),
                                    styles.RAMP_WIDTH, decimals=1)
        if not len(gdf) and "confidence" in gdf:
            # a run that found no road: the layer still opens styled, as a non-empty one would
            return styles.edges_qml("confidence")
        return None
    if geom == "Point":
        return styles.nodes_qml() if "degree" in gdf else None
    if geom == "Polygon":
        return styles.polygons_qml()
    return None


def _write_layer_styles(gpkg: Path, qmls: Dict[str, str], geom_cols: Dict[str, str]) -> None:
    """Store default styles in the GeoPackage ``layer_styles`` table (schema as QGIS creates it),
    registered in ``gpkg_contents`` as an attributes table."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    con = sqlite3.connect(str(gpkg))
    try:
        con.execute(
            "CREATE TABLE IF NOT EXISTS layer_styles ("
            "id INTEGER PRIMARY KEY AUTOINCREMENT, f_table_catalog TEXT(256), "
            "f_table_schema TEXT(256), f_table_name TEXT(256), f_geometry_column TEXT(256), "
            "styleName TEXT(30), styleQML TEXT, styleSLD TEXT, useAsDefault BOOLEAN, "
            "description TEXT, owner TEXT(30), ui TEXT(30), update_time DATETIME)"
        )
        con.execute(
            "INSERT OR IGNORE INTO gpkg_contents (table_name, data_type, identifier, description, "
            "last_change) VALUES ('layer_styles', 'attributes', 'layer_styles', "
            "'QGIS layer styles', ?)",
            (now,),
        )
        for layer, qml in qmls.items():
            con.execute("DELETE FROM layer_styles WHERE f_table_name = ?", (layer,))
            con.execute(
                "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, "
                "f_geometry_column, styleName, styleQML, styleSLD, useAsDefault, description, "
                "owner, ui, update_time) VALUES ('', '', ?, ?, ?, ?, '', 1, ?, '', '', ?)",
                (layer, geom_cols.get(layer, "geom"), layer, qml,
                 f"RoadSeg Studio default style for {layer}", now),
            )
        con.commit()
    finally:
        con.close()


def _geometry_column(gpkg: Path, layer: str) -> str:
    con = sqlite3.connect(str(gpkg))
    try:
        row = con.execute("SELECT column_name FROM gpkg_geometry_columns WHERE table_name = ?",
                          (layer,)).fetchone()
    finally:
        con.close()
    return row[0] if row else "geom"


def write_vectors(
    network_or_gdfs: object,
    path: PathLike,
    target_crs: object = None,
    overwrite: bool = False,
    style: bool = True,
) -> Dict[str, Path]:
    """Write a :class:`gis.vectorize.RoadNetwork` (edges, nodes, polygons), a mapping of layer name
    -> GeoDataFrame, or one GeoDataFrame, to ``path``; the format follows the extension.

    Args:
        network_or_gdfs: what to write; every layer needs a CRS.
        path: ``.gpkg``, ``.shp``, ``.geojson`` or ``.json`` (see the module docstring for the
            names of the files each format produces).
        target_crs: reproject every layer to this CRS first (None: keep the layers' CRS; GeoJSON is
            always EPSG:4326).
        overwrite: replace existing outputs (a GeoPackage is replaced as a whole, not appended
            to); without it an existing output raises :class:`gis.errors.OutputExistsError` and
            nothing is written.
        style: write QGIS ``.qml`` sidecars (and the GeoPackage ``layer_styles`` table).

    Returns:
        layer name -> written file path.
    """
    import pyogrio
    from pyproj import CRS as ProjCRS

    path = Path(path)
    driver = _driver(path)
    import geopandas as gpd

    single = isinstance(network_or_gdfs, gpd.GeoDataFrame)
    layers = _layers(network_or_gdfs, path)
    if not layers:
        raise VectorWriteError(f"{path}: nothing to write")
    if not path.parent.is_dir():
        raise OutputDirError(f"{path}: output directory {path.parent} does not exist")

    if driver == "GeoJSON":
        if target_crs is not None and ProjCRS.from_user_input(target_crs).to_epsg() != 4326:
            raise CRSError(f"{path}: GeoJSON is written in EPSG:4326 (RFC 7946); "
                           f"target_crs {target_crs} is not allowed")
        target_crs = "EPSG:4326"
    prepared: Dict[str, gpd.GeoDataFrame] = {}
    for name, gdf in layers.items():
        if gdf.crs is None:
            raise CRSError(f"{path}: layer {name!r} has no CRS")
        prepared[name] = gdf.to_crs(target_crs) if target_crs is not None else gdf

    targets = layer_paths(path, prepared, single)
    sidecars = {name: _sidecar(targets[name], name, driver, single) for name in prepared}
    qmls: Dict[str, str] = {}
    if style:
        for name, gdf in layers.items():
            qml = style_for_layer(name, gdf)
            if qml is not None:
                qmls[name] = qml
    existing = sorted(str(p) for p in set(targets.values()) if p.exists())
    # a sidecar is an existing output only when it differs from what we would write (a Shapefile
    # and a GeoJSON with the same stem share identical .qml files)
    existing += sorted(str(sidecars[n]) for n, q in qmls.items()
                       if sidecars[n].exists() and sidecars[n].read_text(encoding="utf-8") != q)
    if existing and not overwrite:
        raise OutputExistsError(f"{existing[0]}: output exists (pass overwrite=True to replace it)")

    tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.stem}.tmp-", dir=str(path.parent)))
    try:
        tmp_targets = {name: tmpdir / p.name for name, p in targets.items()}
        for name, gdf in prepared.items():
            kwargs = {}
            if driver == "GPKG":
                kwargs["layer"] = name
                # GeoPackage 1.2: read without warnings by the GDAL of every QGIS 3.x (GDAL's
                # default 1.4 makes QGIS 3.22 warn "may only be partially supported")
                kwargs["dataset_options"] = {"VERSION": "1.2"}
            if driver == "ESRI Shapefile":
                kwargs["encoding"] = "UTF-8"
            if driver == "GeoJSON":
                kwargs["layer_options"] = {"RFC7946": "YES", "COORDINATE_PRECISION": "8"}
            if len(gdf) == 0:
                kwargs["geometry_type"] = _GEOM_TYPES.get(name, "Unknown")
            data = gdf.copy()
            for col in data.columns:
                if data[col].dtype == bool:
                    data[col] = data[col].astype(np.int32)
            try:
                pyogrio.write_dataframe(data, str(tmp_targets[name]), driver=driver, **kwargs)
            except Exception as exc:
                raise VectorWriteError(f"{targets[name]}: cannot write layer {name!r} ({exc})") \
                    from exc
            if name in qmls:
                (tmpdir / sidecars[name].name).write_text(qmls[name], encoding="utf-8")
        if driver == "ESRI Shapefile":
            for p in tmp_targets.values():
                cpg = p.with_suffix(".cpg")
                if not cpg.exists():
                    cpg.write_text("UTF-8", encoding="ascii")
        if driver == "GPKG" and qmls:
            gpkg = next(iter(tmp_targets.values()))
            cols = {name: _geometry_column(gpkg, name) for name in qmls}
            _write_layer_styles(gpkg, qmls, cols)

        # move into place: remove stale parts of replaced shapefiles first
        if overwrite:
            for p in targets.values():
                stale = [p.with_suffix(s) for s in _SHP_PARTS] if driver == "ESRI Shapefile" \
                    else [p]
                for s in stale:
                    if s.exists():
                        s.unlink()
        for f in sorted(tmpdir.iterdir()):
            os.replace(f, path.parent / f.name)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    log.info("wrote %s (%s): %s", path, driver, ", ".join(f"{k}={len(v)}" for k, v in
                                                           prepared.items()))
    return targets
