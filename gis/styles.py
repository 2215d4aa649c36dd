"""QGIS 3 layer styles (``.qml`` XML) for the outputs of :mod:`gis.vectorize` and the masks.

Generated, not templated: every function returns the QML document as a string.

* :func:`edges_qml`: graduated line renderer (``graduatedSymbol``) on a numeric attribute, e.g.
  ``confidence`` (0..1, red -> yellow -> green) or ``width_m``, with a gradient colour ramp;
* :func:`nodes_qml`: categorized point renderer (``categorizedSymbol``) on ``degree``
  (1 = dead end, 2 = through, 3 = T-junction, 4 = crossing, other);
* :func:`polygons_qml`: single-symbol semi-transparent fill;
* :func:`raster_qml`: single-band pseudocolor raster renderer for a road mask (0/1 + nodata) or a
  uint8 probability raster (0..254).

Symbol-layer properties are written both as ``<Option type="Map">`` (QGIS >= 3.26) and as
``<prop k v>`` elements (older QGIS 3 releases), so any QGIS 3 reads them.
"""
from __future__ import annotations

import math
import os
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from gis.errors import OutputDirError, OutputExistsError

__all__ = [
    "QGIS_VERSION",
    "RAMP_CONFIDENCE",
    "RAMP_WIDTH",
    "edges_qml",
    "nodes_qml",
    "polygons_qml",
    "raster_qml",
    "graduated_breaks",
    "write_qml",
    "write_raster_style",
    "default_styles",
]

#: version string written into the documents (any QGIS 3 reads them)
QGIS_VERSION = "3.28.0-Firenze"

RGBA = Tuple[int, int, int, int]
#: low confidence red, middle yellow, high green (ColorBrewer RdYlGn end points)
RAMP_CONFIDENCE: Tuple[RGBA, ...] = ((215, 25, 28, 255), (255, 255, 191, 255), (26, 150, 65, 255))
#: narrow roads light, wide roads dark blue
RAMP_WIDTH: Tuple[RGBA, ...] = ((198, 219, 239, 255), (107, 174, 214, 255), (8, 69, 148, 255))

_NODE_COLOURS: Dict[str, Tuple[RGBA, str, float]] = {
    "1": ((228, 26, 28, 255), "dead end (1)", 1.6),
    "2": ((150, 150, 150, 255), "through (2)", 1.0),
    "3": ((255, 127, 0, 255), "T-junction (3)", 2.0),
    "4": ((55, 126, 184, 255), "crossing (4)", 2.2),
    "": ((152, 78, 163, 255), "other", 2.4),
}


def _rgba(c: RGBA) -> str:
    return ",".join(str(int(v)) for v in c)


def _interp(ramp: Sequence[RGBA], t: float) -> RGBA:
    """Colour at ``t`` in 0..1 of a piecewise-linear ramp with evenly spaced stops."""
    t = min(max(t, 0.0), 1.0)
    n = len(ramp) - 1
    i = min(int(t * n), n - 1)
    f = t * n - i
    a, b = ramp[i], ramp[i + 1]
    r, g, b_, al = (int(round(a[k] + (b[k] - a[k]) * f)) for k in range(4))
    return (r, g, b_, al)


def _options(parent: ET.Element, props: Dict[str, str]) -> None:
    opt = ET.SubElement(parent, "Option", type="Map")
    for k, v in props.items():
        ET.SubElement(opt, "Option", name=k, type="QString", value=str(v))
    for k, v in props.items():
        ET.SubElement(parent, "prop", k=k, v=str(v))


def _symbol(parent: ET.Element, name: str, kind: str, layer_class: str,
            props: Dict[str, str]) -> ET.Element:
    sym = ET.SubElement(parent, "symbol", name=name, type=kind, alpha="1", clip_to_extent="1",
                        force_rhr="0")
    layer = ET.SubElement(sym, "layer", attrib={"class": layer_class, "enabled": "1", "pass": "0",
                                                "locked": "0"})
    _options(layer, props)
    return sym


def _line_props(colour: RGBA, width_mm: float) -> Dict[str, str]:
    return {
        "line_color": _rgba(colour),
        "line_width": f"{width_mm:g}",
        "line_width_unit": "MM",
        "line_style": "solid",
        "capstyle": "round",
        "joinstyle": "round",
        "offset": "0",
    }


def _marker_props(colour: RGBA, size_mm: float) -> Dict[str, str]:
    return {
        "name": "circle",
        "color": _rgba(colour),
        "outline_color": "35,35,35,255",
        "outline_style": "solid",
        "outline_width": "0.2",
        "outline_width_unit": "MM",
        "size": f"{size_mm:g}",
        "size_unit": "MM",
        "angle": "0",
    }


def _document() -> Tuple[ET.Element, ET.Element]:
    root = ET.Element("qgis", version=QGIS_VERSION, styleCategories="Symbology")
    return root, root


def _serialise(root: ET.Element) -> str:
    ET.indent(root, space="  ")
    body = ET.tostring(root, encoding="unicode")
    return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + body + "\n"


def _colour_ramp(parent: ET.Element, ramp: Sequence[RGBA]) -> None:
    cr = ET.SubElement(parent, "colorramp", type="gradient", name="[source]")
    stops = ":".join(
        f"{i / (len(ramp) - 1):g};{_rgba(c)}" for i, c in enumerate(ramp[1:-1], start=1)
    )
    props = {"color1": _rgba(ramp[0]), "color2": _rgba(ramp[-1]), "discrete": "0",
             "rampType": "gradient"}
    if stops:
        props["stops"] = stops
    _options(cr, props)


def graduated_breaks(vmin: float, vmax: float, classes: int = 5) -> List[float]:
    """``classes + 1`` equal-interval class bounds from ``vmin`` to ``vmax`` (finite, vmin < vmax;
    a degenerate or non-finite range becomes ``[vmin, vmin + 1]``)."""
    if classes < 1:
        raise ValueError(f"classes must be >= 1, got {classes}")
    if not (math.isfinite(vmin) and math.isfinite(vmax)):
        vmin, vmax = 0.0, 1.0
    if vmax <= vmin:
        vmax = vmin + 1.0
    step = (vmax - vmin) / classes
    return [vmin + i * step for i in range(classes)] + [vmax]


def edges_qml(
    attribute: str = "confidence",
    breaks: Optional[Sequence[float]] = None,
    ramp: Sequence[RGBA] = RAMP_CONFIDENCE,
    width_mm: float = 0.8,
    decimals: int = 2,
) -> str:
    """Graduated line style on ``attribute``; ``breaks`` are the class bounds (default 0..1 in five
    classes, suited to ``confidence``). Features outside all classes (e.g. NULL confidence) are not
    drawn by QGIS's graduated renderer, so a call for ``width_m`` should pass its data range."""
    b = list(breaks) if breaks is not None else graduated_breaks(0.0, 1.0, 5)
    if len(b) < 2 or any(y <= x for x, y in zip(b, b[1:])):
        raise ValueError(f"breaks must be at least two increasing values, got {b}")
    root, _ = _document()
    r = ET.SubElement(root, "renderer-v2", type="graduatedSymbol", attr=attribute,
                      graduatedMethod="GraduatedColor", symbollevels="0", enableorderby="0",
                      forceraster="0")
    ranges = ET.SubElement(r, "ranges")
    symbols = ET.SubElement(r, "symbols")
    n = len(b) - 1
    for i in range(n):
        lo, hi = b[i], b[i + 1]
        ET.SubElement(ranges, "range", symbol=str(i), lower=f"{lo:.6f}", upper=f"{hi:.6f}",
                      label=f"{lo:.{decimals}f} - {hi:.{decimals}f}", render="true")
        colour = _interp(ramp, i / max(n - 1, 1))
        _symbol(symbols, str(i), "line", "SimpleLine", _line_props(colour, width_mm))
    src = ET.SubElement(r, "source-symbol")
    _symbol(src, "0", "line", "SimpleLine", _line_props(ramp[0], width_mm))
    _colour_ramp(r, ramp)
    ET.SubElement(r, "classificationMethod", id="EqualInterval")
    ET.SubElement(r, "mode", name="equal")
    ET.SubElement(root, "layerGeometryType").text = "1"
    return _serialise(root)


def nodes_qml(attribute: str = "degree") -> str:
    """Categorized point style on ``degree``: 1, 2, 3, 4 and all other values."""
    root, _ = _document()
    r = ET.SubElement(root, "renderer-v2", type="categorizedSymbol", attr=attribute,
                      symbollevels="0", enableorderby="0", forceraster="0")
    cats = ET.SubElement(r, "categories")
    symbols = ET.SubElement(r, "symbols")
    for i, (value, (colour, label, size)) in enumerate(_NODE_COLOURS.items()):
        ET.SubElement(cats, "category", symbol=str(i), value=value, label=label, render="true",
                      type="string" if value == "" else "long")
        _symbol(symbols, str(i), "marker", "SimpleMarker", _marker_props(colour, size))
    src = ET.SubElement(r, "source-symbol")
    _symbol(src, "0", "marker", "SimpleMarker", _marker_props((128, 128, 128, 255), 1.5))
    ET.SubElement(root, "layerGeometryType").text = "0"
    return _serialise(root)


def polygons_qml(colour: RGBA = (255, 127, 0, 90)) -> str:
    """Single-symbol fill for road-surface polygons (semi-transparent, thin outline)."""
    root, _ = _document()
    r = ET.SubElement(root, "renderer-v2", type="singleSymbol", symbollevels="0",
                      enableorderby="0", forceraster="0")
    symbols = ET.SubElement(r, "symbols")
    _symbol(symbols, "0", "fill", "SimpleFill", {
        "color": _rgba(colour),
        "style": "solid",
        "outline_color": _rgba((colour[0], colour[1], colour[2], 255)),
        "outline_style": "solid",
        "outline_width": "0.2",
        "outline_width_unit": "MM",
        "joinstyle": "bevel",
    })
    ET.SubElement(root, "layerGeometryType").text = "2"
    return _serialise(root)


def raster_qml(kind: str = "mask", band: int = 1, road_value: int = 1) -> str:
    """Single-band pseudocolor raster style.

    ``kind="mask"``: exact classes 0 (transparent) and ``road_value`` (red); 1 for the masks of
    :mod:`gis.mosaic` (whose nodata 255 QGIS leaves undrawn), 255 for {0, 255} masks.
    ``kind="probability"``: interpolated ramp over the uint8 encoding 0..254 (0 transparent).
    """
    if kind not in ("mask", "probability"):
        raise ValueError(f"kind must be 'mask' or 'probability', got {kind!r}")
    root, _ = _document()
    pipe = ET.SubElement(root, "pipe")
    lo, hi = (0, int(road_value)) if kind == "mask" else (0, 254)
    rr = ET.SubElement(pipe, "rasterrenderer", type="singlebandpseudocolor", band=str(band),
                       opacity="1", alphaBand="-1", classificationMin=str(lo),
                       classificationMax=str(hi), nodataColor="")
    ET.SubElement(rr, "rasterTransparency")
    mmo = ET.SubElement(rr, "minMaxOrigin")
    for tag, text in (("limits", "None"), ("extent", "WholeRaster"),
                      ("statAccuracy", "Estimated"), ("cumulativeCutLower", "0.02"),
                      ("cumulativeCutUpper", "0.98"), ("stdDevFactor", "2")):
        ET.SubElement(mmo, tag).text = text
    shader = ET.SubElement(rr, "rastershader")
    if kind == "mask":
        crs_ = ET.SubElement(shader, "colorrampshader", colorRampType="EXACT",
                             classificationMode="2", clip="0", minimumValue="0",
                             maximumValue=str(int(road_value)), labelPrecision="0")
        ET.SubElement(crs_, "item", value="0", label="background", color="#000000", alpha="0")
        ET.SubElement(crs_, "item", value=str(int(road_value)), label="road", color="#e41a1c",
                      alpha="255")
    else:
        crs_ = ET.SubElement(shader, "colorrampshader", colorRampType="INTERPOLATED",
                             classificationMode="1", clip="0", minimumValue="0",
                             maximumValue="254", labelPrecision="2")
        _colour_ramp(crs_, ((255, 255, 178, 255), (253, 141, 60, 255), (189, 0, 38, 255)))
        ET.SubElement(crs_, "item", value="0", label="0.00", color="#ffffb2", alpha="0")
        ET.SubElement(crs_, "item", value="127", label="0.50", color="#fd8d3c", alpha="200")
        ET.SubElement(crs_, "item", value="254", label="1.00", color="#bd0026", alpha="255")
    ET.SubElement(pipe, "brightnesscontrast", brightness="0", contrast="0", gamma="1")
    ET.SubElement(pipe, "huesaturation", saturation="0", grayscaleMode="0", colorizeOn="0",
                  colorizeRed="255", colorizeGreen="128", colorizeBlue="128",
                  colorizeStrength="100", invertColors="0")
    ET.SubElement(pipe, "rasterresampler", maxOversampling="2")
    ET.SubElement(root, "blendMode").text = "0"
    return _serialise(root)


def write_qml(path: Union[str, Path], qml: str, overwrite: bool = False) -> Path:
    """Write a QML document to ``path`` (temporary name, then rename); refuses to replace an
    existing file without ``overwrite=True`` (:class:`gis.errors.OutputExistsError`)."""
    p = Path(path)
    if not p.parent.is_dir():
        raise OutputDirError(f"{p}: output directory {p.parent} does not exist")
    if p.exists() and not overwrite:
        raise OutputExistsError(f"{p}: style exists (pass overwrite=True to replace it)")
    tmp = p.with_name(f".{p.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(qml, encoding="utf-8")
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    return p


def write_raster_style(
    raster_path: Union[str, Path],
    kind: str = "mask",
    road_value: int = 1,
    overwrite: bool = False,
) -> Path:
    """Write ``<raster stem>.qml`` beside a mask or probability GeoTIFF (QGIS loads a same-named
    ``.qml`` as the layer's default style); see :func:`raster_qml`. Returns the style path."""
    return write_qml(Path(raster_path).with_suffix(".qml"), raster_qml(kind, road_value=road_value),
                     overwrite)


def default_styles() -> Dict[str, str]:
    """File name -> QML of the styles shipped in ``resources/styles``; regenerate those with
    ``write_qml(folder / name, qml, overwrite=True)`` for each item."""
    return {
        "edges_confidence.qml": edges_qml("confidence"),
        "nodes_degree.qml": nodes_qml(),
        "road_polygons.qml": polygons_qml(),
        "road_mask.qml": raster_qml("mask"),
        "road_probability.qml": raster_qml("probability"),
    }
