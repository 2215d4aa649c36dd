"""Run by the system Python that carries QGIS (python3-qgis): open RoadSeg outputs like an analyst.

    /usr/bin/python3 tests/qgis/open_in_qgis.py OUT_DIR

Prints one JSON object: for every raster and vector layer in OUT_DIR, whether QGIS finds it
valid, its CRS, feature count / size, and the renderer its .qml style gives it.
"""
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qgis.core import QgsApplication, QgsRasterLayer, QgsVectorLayer  # noqa: E402


def main(out_dir: str) -> int:
    app = QgsApplication([], False)
    app.initQgis()
    report = {"rasters": {}, "vectors": {}}
    d = Path(out_dir)
    for tif in sorted(d.glob("*.tif")):
        lyr = QgsRasterLayer(str(tif), tif.stem)
        entry = {"valid": lyr.isValid(), "crs": lyr.crs().authid(), "width": lyr.width(),
                 "height": lyr.height(), "bands": lyr.bandCount()}
        qml = tif.with_suffix(".qml")
        if qml.exists():
            msg, ok = lyr.loadNamedStyle(str(qml))
            entry["style_ok"] = bool(ok)
            entry["renderer"] = lyr.renderer().type() if lyr.renderer() else None
        report["rasters"][tif.name] = entry
    for gpkg in sorted(d.glob("*.gpkg")):
        for layer in ("edges", "nodes"):
            lyr = QgsVectorLayer(f"{gpkg}|layername={layer}", layer, "ogr")
            entry = {"valid": lyr.isValid(), "crs": lyr.crs().authid(),
                     "features": lyr.featureCount(),
                     "fields": [f.name() for f in lyr.fields()]}
            # QGIS applies the default style stored in the GeoPackage's layer_styles table
            entry["renderer_default"] = lyr.renderer().type() if lyr.renderer() else None
            qml = gpkg.with_name(f"{gpkg.stem}_{layer}.gpkg.qml")
            if qml.exists():
                msg, ok = lyr.loadNamedStyle(str(qml))
                entry["style_ok"] = bool(ok)
                entry["renderer"] = lyr.renderer().type() if lyr.renderer() else None
            report["vectors"][f"{gpkg.name}:{layer}"] = entry
    for shp in sorted(d.glob("*.shp")):
        lyr = QgsVectorLayer(str(shp), shp.stem, "ogr")
        entry = {"valid": lyr.isValid(), "crs": lyr.crs().authid(),
                 "features": lyr.featureCount()}
        qml = shp.with_suffix(".qml")
        if qml.exists():
            msg, ok = lyr.loadNamedStyle(str(qml))
            entry["style_ok"] = bool(ok)
            entry["renderer"] = lyr.renderer().type() if lyr.renderer() else None
        report["vectors"][shp.name] = entry
    print(json.dumps(report), flush=True)
    # QgsApplication.exitQgis() can crash at interpreter teardown in headless QGIS 3.22; the
    # report is out, so leave without running the C++ destructors.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
