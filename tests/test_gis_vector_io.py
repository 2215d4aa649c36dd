"""gis.vector_io and gis.styles: written files reopen with the right CRS, columns and styles."""
from __future__ import annotations

import sqlite3
import xml.etree.ElementTree as ET

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
from affine import Affine
from pyproj import CRS

from gis import styles
from gis.errors import CRSError, OutputDirError, OutputExistsError, VectorWriteError
from gis.vector_io import layer_paths, write_vectors
from gis.vectorize import mask_to_polygons, vectorize_mask

UTM = "EPSG:32633"
T_UTM = Affine(0.5, 0, 500000.0, 0, -0.5, 5000000.0)
EDGE_COLS = {"u", "v", "length_m", "width_m", "confidence", "bridged_m", "component"}


@pytest.fixture(scope="module")
def network():
    m = np.zeros((120, 160), np.uint8)
    m[55:65, :] = 1  # horizontal road, 5 m wide
    m[:55, 95:105] = 1  # branch up: a T-junction
    prob = np.where(m > 0, 0.75, 0.05).astype(np.float32)
    net = vectorize_mask(m, T_UTM, UTM, probability=prob)
    net.polygons = mask_to_polygons(m, T_UTM, UTM)
    assert len(net.edges) == 3 and sorted(net.nodes.degree) == [1, 1, 1, 3]
    return net


def _assert_same(read: gpd.GeoDataFrame, src: gpd.GeoDataFrame, crs, cols) -> None:
    assert CRS.from_user_input(read.crs).equals(CRS.from_user_input(crs))
    assert cols <= set(read.columns)
    assert len(read) == len(src)
    back = read.to_crs(src.crs)
    assert back.geometry.geom_equals_exact(src.geometry.reset_index(drop=True), 0.01).all()


def _qml_root(path) -> ET.Element:
    root = ET.parse(path).getroot()
    assert root.tag == "qgis"
    return root


def test_geopackage_layers_styles_and_crs(tmp_path, network):
    out = tmp_path / "roads.gpkg"
    written = write_vectors(network, out)
    assert set(written) == {"edges", "nodes", "polygons"}
    assert all(p == out for p in written.values())
    names = {n for n, _ in pyogrio.list_layers(out)}
    assert {"edges", "nodes", "polygons"} <= names
    edges = gpd.read_file(out, layer="edges")
    _assert_same(edges, network.edges, UTM, EDGE_COLS)
    assert np.allclose(edges.length_m, network.edges.length_m)
    assert np.allclose(edges.confidence, 0.75)
    nodes = gpd.read_file(out, layer="nodes")
    _assert_same(nodes, network.nodes, UTM, {"node_id", "degree"})
    assert sorted(nodes.degree) == [1, 1, 1, 3]
    polys = gpd.read_file(out, layer="polygons")
    assert len(polys) == 1 and polys.area_m2.iloc[0] == pytest.approx(
        (160 * 10 + 55 * 10) * 0.25)
    # default styles in layer_styles, as QGIS reads them
    with sqlite3.connect(out) as con:
        rows = con.execute("SELECT f_table_name, f_geometry_column, useAsDefault, styleQML "
                           "FROM layer_styles").fetchall()
        kinds = dict(con.execute("SELECT table_name, data_type FROM gpkg_contents").fetchall())
    assert kinds["layer_styles"] == "attributes"
    by_layer = {r[0]: r for r in rows}
    assert set(by_layer) == {"edges", "nodes", "polygons"}
    assert all(r[1] == "geom" and r[2] == 1 for r in rows)
    r = ET.fromstring(by_layer["edges"][3].split("\n", 1)[1]).find("renderer-v2")
    assert r.get("type") == "graduatedSymbol" and r.get("attr") == "confidence"
    # sidecars beside the GeoPackage
    for layer in ("edges", "nodes", "polygons"):
        assert (tmp_path / f"roads_{layer}.gpkg.qml").is_file()
    # no temporary leftovers
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_shapefile_per_layer_with_prj_cpg_qml(tmp_path, network):
    out = tmp_path / "roads.shp"
    written = write_vectors(network, out)
    assert written == layer_paths(out, ["edges", "nodes", "polygons"])
    for layer in ("edges", "nodes", "polygons"):
        stem = tmp_path / f"roads_{layer}"
        for ext in (".shp", ".shx", ".dbf", ".prj", ".cpg", ".qml"):
            assert stem.with_suffix(ext).is_file(), f"{stem}{ext} missing"
        assert stem.with_suffix(".cpg").read_text().strip().upper() in ("UTF-8", "UTF8")
        assert CRS.from_wkt(stem.with_suffix(".prj").read_text()).to_epsg() == 32633
    assert not (tmp_path / "roads.shp").exists()
    edges = gpd.read_file(tmp_path / "roads_edges.shp")
    _assert_same(edges, network.edges, UTM, EDGE_COLS)
    assert pyogrio.read_info(tmp_path / "roads_edges.shp")["encoding"] == "UTF-8"
    r = _qml_root(tmp_path / "roads_nodes.qml").find("renderer-v2")
    assert r.get("type") == "categorizedSymbol" and r.get("attr") == "degree"
    assert [c.get("value") for c in r.find("categories")] == ["1", "2", "3", "4", ""]


def test_geojson_is_wgs84(tmp_path, network):
    out = tmp_path / "roads.geojson"
    write_vectors(network, out)
    edges = gpd.read_file(tmp_path / "roads_edges.geojson")
    assert edges.crs.to_epsg() == 4326
    x0, y0 = edges.geometry.iloc[0].coords[0]
    assert 14.0 < x0 < 16.0 and 44.0 < y0 < 46.0  # lon/lat order (UTM 33N, ~45 N)
    utm = edges.to_crs(UTM)
    assert utm.length.sum() == pytest.approx(network.edges.length.sum(), rel=1e-4)
    assert (tmp_path / "roads_edges.qml").is_file()
    with pytest.raises(CRSError):
        write_vectors(network, tmp_path / "other.geojson", target_crs="EPSG:3857")


def test_target_crs_reprojects(tmp_path, network):
    out = tmp_path / "roads_3857.gpkg"
    write_vectors(network, out, target_crs="EPSG:3857")
    nodes = gpd.read_file(out, layer="nodes")
    assert nodes.crs.to_epsg() == 3857
    back = nodes.to_crs(UTM)
    assert back.geometry.distance(network.nodes.geometry.reset_index(drop=True)).max() < 0.01


def test_overwrite_guard_and_replacement(tmp_path, network):
    out = tmp_path / "roads.shp"
    write_vectors(network, out)
    before = (tmp_path / "roads_edges.dbf").read_bytes()
    with pytest.raises(OutputExistsError) as err:
        write_vectors(network, out)
    assert "roads_" in str(err.value)
    assert (tmp_path / "roads_edges.dbf").read_bytes() == before
    smaller = {"edges": network.edges.iloc[:1], "nodes": network.nodes.iloc[:2]}
    write_vectors(smaller, out, overwrite=True)
    assert len(gpd.read_file(tmp_path / "roads_edges.shp")) == 1
    gpkg = tmp_path / "r.gpkg"
    write_vectors(network, gpkg)
    with pytest.raises(OutputExistsError):
        write_vectors(network, gpkg)
    write_vectors(smaller, gpkg, overwrite=True)
    names = {n for n, _ in pyogrio.list_layers(gpkg)}
    assert "polygons" not in names and len(gpd.read_file(gpkg, layer="edges")) == 1


def test_single_geodataframe_and_errors(tmp_path, network):
    out = tmp_path / "lines.geojson"
    assert write_vectors(network.edges, out) == {"lines": out}
    assert out.is_file() and (tmp_path / "lines.qml").is_file()
    with pytest.raises(VectorWriteError):
        write_vectors(network, tmp_path / "roads.kml")
    with pytest.raises(OutputDirError):
        write_vectors(network, tmp_path / "missing" / "roads.gpkg")
    with pytest.raises(CRSError):
        write_vectors({"edges": network.edges.set_crs(None, allow_override=True)},
                      tmp_path / "nocrs.gpkg")
    with pytest.raises(TypeError):
        write_vectors([1, 2], tmp_path / "x.gpkg")


def test_empty_network_writes_typed_empty_layers(tmp_path):
    net = vectorize_mask(np.zeros((40, 40), bool), T_UTM, UTM)
    out = tmp_path / "empty.gpkg"
    write_vectors(net, out)
    layers = dict(pyogrio.list_layers(out))
    assert layers["edges"] == "LineString" and layers["nodes"] == "Point"
    assert len(gpd.read_file(out, layer="edges")) == 0
    # the empty layers still get their QGIS styles, in the GeoPackage and beside a Shapefile
    with sqlite3.connect(out) as con:
        styled = {r[0] for r in con.execute("SELECT f_table_name FROM layer_styles")}
    assert styled == {"edges", "nodes"}
    write_vectors(net, tmp_path / "empty.shp")
    r = _qml_root(tmp_path / "empty_edges.qml").find("renderer-v2")
    assert r.get("type") == "graduatedSymbol" and r.get("attr") == "confidence"


def test_width_style_without_probabilities(tmp_path):
    m = np.zeros((60, 100), np.uint8)
    m[25:35, :] = 1
    net = vectorize_mask(m, T_UTM, UTM)
    write_vectors(net, tmp_path / "w.shp")
    r = _qml_root(tmp_path / "w_edges.qml").find("renderer-v2")
    assert r.get("type") == "graduatedSymbol" and r.get("attr") == "width_m"
    lows = [float(x.get("lower")) for x in r.find("ranges")]
    ups = [float(x.get("upper")) for x in r.find("ranges")]
    w = float(net.edges.width_m.iloc[0])
    assert lows[0] <= w <= ups[-1]


def test_qml_documents_are_valid_and_complete():
    e = ET.fromstring(styles.edges_qml("confidence").split("\n", 1)[1])
    r = e.find("renderer-v2")
    ranges = r.find("ranges")
    assert len(ranges) == 5 and len(r.find("symbols")) == 5
    assert float(ranges[0].get("lower")) == 0 and float(ranges[-1].get("upper")) == 1
    colours = [s.find("layer/Option/Option[@name='line_color']").get("value")
               for s in r.find("symbols")]
    assert len(set(colours)) == 5  # a ramp, not one colour
    assert r.find("colorramp").get("type") == "gradient"
    # old-style props mirror the Option maps
    lay = r.find("symbols/symbol/layer")
    assert {p.get("k") for p in lay.findall("prop")} == \
        {o.get("name") for o in lay.findall("Option/Option")}
    with pytest.raises(ValueError):
        styles.edges_qml("x", breaks=[1.0, 1.0])

    rast = ET.fromstring(styles.raster_qml("mask").split("\n", 1)[1])
    rr = rast.find("pipe/rasterrenderer")
    assert rr.get("type") == "singlebandpseudocolor"
    items = rr.findall("rastershader/colorrampshader/item")
    assert [i.get("value") for i in items] == ["0", "1"] and items[0].get("alpha") == "0"
    prob = ET.fromstring(styles.raster_qml("probability").split("\n", 1)[1])
    shader = prob.find("pipe/rasterrenderer/rastershader/colorrampshader")
    assert shader.get("colorRampType") == "INTERPOLATED" and shader.get("maximumValue") == "254"
    poly = ET.fromstring(styles.polygons_qml().split("\n", 1)[1])
    assert poly.find("renderer-v2").get("type") == "singleSymbol"
    assert styles.graduated_breaks(0, 10, 5) == [0, 2, 4, 6, 8, 10]


def test_raster_style_sidecar(tmp_path):
    import rasterio

    tif = tmp_path / "mask.tif"
    with rasterio.open(tif, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8",
                       crs=UTM, transform=T_UTM, nodata=255) as ds:
        ds.write(np.zeros((1, 8, 8), np.uint8))
    qml = styles.write_raster_style(tif, "mask", road_value=255)
    assert qml == tmp_path / "mask.qml"
    items = ET.parse(qml).getroot().findall("pipe/rasterrenderer/rastershader/colorrampshader/item")
    assert [i.get("value") for i in items] == ["0", "255"]
    with pytest.raises(OutputExistsError):
        styles.write_raster_style(tif)
    styles.write_raster_style(tif, "probability", overwrite=True)
    assert "INTERPOLATED" in qml.read_text()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_shipped_styles_match_the_generator():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "resources" / "styles"
    for name, qml in styles.default_styles().items():
        assert (folder / name).read_text(encoding="utf-8") == qml, f"{name} is stale"
        ET.fromstring(qml.split("\n", 1)[1])
