"""Batch extraction over many scenes (or blocks of very large rasters) on Dask ``distributed``.

:func:`run_batch` is the Qt-free engine behind ``roadseg batch``::

    expand_inputs (GeoTIFFs, folders, list files, VRTs)
      -> plan: one item per scene, or per block (with overlap) of a raster larger than
         ``block_size_px``
      -> Dask: one task per item, each calling app.service.extraction.run_extraction (the same
         single-scene job as ``roadseg extract``: staged, all-or-nothing outputs)
      -> blocks of one raster joined into that scene's network (gis.merge)
      -> every scene's network joined into one (gis.merge) -> batch_roads.gpkg
      -> batch_summary.json

Engine: a :class:`distributed.LocalCluster` of one single-threaded worker process per core, or a
running cluster given by its scheduler address (``tcp://host:8786``). Workers read the inputs and
write the outputs themselves, so inputs and the output folder must be reachable under the same
paths from every worker (local disk, NFS, or GDAL ``/vsis3/``-style URLs for inputs).

Nothing lost:

* ``batch_manifest.json`` in the output folder records every item's state after each change
  (written to a temporary file and renamed). Running the same batch again skips the finished
  items; failed and unfinished ones run again. A manifest written with other options is refused
  unless ``overwrite``.
* A failed item gets its one-line error in the manifest and the summary; the others go on.
* Cancelling (``should_cancel``, Ctrl+C in the CLI) stops new items, asks running ones to stop
  (a flag file the workers poll between batches of tiles), keeps finished items and leaves no
  partial file: unfinished items stay in their staging folders, which are removed.
* A worker that dies mid-item has its item rerun on another worker (Dask reschedules it, up to
  ``distributed.scheduler.allowed-failures`` times); when that is used up the item is marked
  failed. A killed worker leaves only a hidden staging folder, removed at the end of the batch.

Progress: ``on_event(BatchEvent)`` receives planning, cluster, per-item start/progress/finish,
merge and end events; item progress (stages and tiles of the single-scene job) comes from the
workers through Dask's event log (``Worker.log_event`` / ``Client.subscribe_topic``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import logging
import math
import os
import queue
import shutil
import threading
import time
import uuid
import xml.sax.saxutils as su
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from app.service.errors import EXPECTED_ERRORS, UserError, as_user_error
from app.service.extraction import ExtractionRequest, run_extraction

__all__ = [
    "BatchRequest",
    "BatchEvent",
    "BatchResult",
    "Item",
    "expand_inputs",
    "plan_items",
    "run_batch",
    "MANIFEST_NAME",
    "SUMMARY_NAME",
    "MERGED_NAME",
]

log = logging.getLogger(__name__)

MANIFEST_NAME = "batch_manifest.json"
SUMMARY_NAME = "batch_summary.json"
MERGED_NAME = "batch_roads.gpkg"
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")
LIST_SUFFIXES = (".txt", ".lst", ".list")
_STAGING_PREFIX = ".roadseg-staging-"
_CANCEL_PREFIX = ".roadseg-cancel-"
_FORMAT_VERSION = 1

EventFn = Callable[["BatchEvent"], None]
CancelFn = Callable[[], bool]


# --------------------------------------------------------------------------------------------
# requests, events, results
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchRequest:
    """One batch run.

    Attributes:
        inputs: GeoTIFFs (or any raster GDAL reads, GDAL ``/vsi...`` paths included), folders
            (their rasters, not recursive), text files listing one path per line (``#``
            comments; relative paths are relative to the list file), or VRTs (one raster).
        out_dir: output folder; every worker must see it under this path.
        extraction: options of every scene's :func:`run_extraction` (``image``, ``out_dir`` and
            ``stem`` are set per item; ``overwrite`` also redoes finished items).
        scheduler: address of a running Dask scheduler (``tcp://host:8786``); None starts a
            local cluster of ``workers`` single-threaded processes.
        workers: size of the local cluster (default: one per core).
        block_size_px: rasters wider or taller than this are cut into blocks of about this size.
        block_overlap_px: overlap between neighbouring blocks.
        retries: extra attempts of an item whose task raised (Dask ``retries``).
        merge: join all scenes' networks into ``batch_roads.gpkg``.
        snap_m: largest gap joined across a seam (default: the vectorizer's ``gap_m``).
        grace_s: how long a cancelled batch waits for running items to stop.
    """

    inputs: Tuple[str, ...]
    out_dir: str
    extraction: ExtractionRequest = field(
        default_factory=lambda: ExtractionRequest(image="", out_dir=""))
    scheduler: Optional[str] = None
    workers: Optional[int] = None
    block_size_px: int = 10000
    block_overlap_px: int = 512
    retries: int = 1
    merge: bool = True
    snap_m: Optional[float] = None
    grace_s: float = 60.0

    def validate(self) -> None:
        if not self.inputs:
            raise UserError("no inputs given")
        if self.workers is not None and int(self.workers) < 1:
            raise UserError(f"workers must be at least 1, got {self.workers}")
        if int(self.block_size_px) < 256:
            raise UserError(f"block size must be at least 256 pixels, got {self.block_size_px}")
        if not 0 <= int(self.block_overlap_px) < int(self.block_size_px) // 2:
            raise UserError(f"block overlap must be between 0 and half the block size, got "
                            f"{self.block_overlap_px}")
        if int(self.retries) < 0:
            raise UserError(f"retries must be >= 0, got {self.retries}")
        if self.snap_m is not None and self.snap_m < 0:
            raise UserError(f"snap distance must be >= 0, got {self.snap_m}")
        self.extraction.validate()


@dataclass(frozen=True)
class BatchEvent:
    """A progress event of :func:`run_batch`.

    ``kind``: ``plan`` (items known), ``cluster`` (``message`` holds the dashboard link),
    ``item_skipped`` (finished in an earlier run), ``item_started``, ``item_progress``
    (``stage``, ``done``/``total`` of that stage; ``infer`` counts tiles), ``item_done``,
    ``item_failed`` (``message``: the one-line error), ``scene_done`` (a block-split scene
    joined), ``merge`` (``message``: ``started``/``done``), ``finished`` or ``cancelled``.
    ``items_done``, ``items_failed`` and ``items_total`` count items so far.
    """

    kind: str
    item: Optional[str] = None
    stage: Optional[str] = None
    done: int = 0
    total: int = 0
    message: str = ""
    items_done: int = 0
    items_failed: int = 0
    items_total: int = 0


@dataclass(frozen=True)
class BatchResult:
    """``status``: ``completed`` (every item done or failed) or ``cancelled``; ``summary``: what
    ``batch_summary.json`` holds; ``summary_path``/``merged_path``: files written."""

    status: str
    summary: Dict[str, Any]
    summary_path: Optional[str]
    merged_path: Optional[str]

    @property
    def failed(self) -> List[Dict[str, Any]]:
        return [s for s in self.summary.get("scenes", []) if s["state"] == "failed"]


@dataclass
class Item:
    """One task: a whole scene (``block`` None) or one block ``(col_off, row_off, w, h)``."""

    key: str
    scene: str
    image: str
    out_dir: str
    stem: str
    block: Optional[Tuple[int, int, int, int]] = None
    bbox: Optional[Tuple[float, float, float, float]] = None
    bbox_crs: Optional[str] = None
    state: str = "pending"
    error: Optional[str] = None
    road_km: Optional[float] = None
    area_km2: Optional[float] = None
    time_s: Optional[float] = None
    window: Optional[List[int]] = None
    summary_path: Optional[str] = None
    attempts: int = 0

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Item":
        names = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        for k in ("block", "bbox"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        return cls(**d)


@dataclass
class _Scene:
    stem: str
    image: str
    crs: Optional[str] = None
    transform: Optional[Tuple[float, ...]] = None
    width: int = 0
    height: int = 0
    items: List[str] = field(default_factory=list)
    blocks: Optional[List[int]] = None  # grid (rows, cols) when split
    error: Optional[str] = None
    state: str = "pending"
    road_km: Optional[float] = None
    area_km2: Optional[float] = None
    time_s: Optional[float] = None
    roads: Optional[str] = None
    footprint: Optional[List[int]] = None  # processed window (col, row, w, h)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------
# inputs and plan
# --------------------------------------------------------------------------------------------
def _is_vsi(p: str) -> bool:
    return p.startswith("/vsi")


def _is_inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _read_list(path: Path) -> List[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(
            f"{path}: cannot read the list of inputs ({exc.__class__.__name__})") from exc
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if _is_vsi(line) or os.path.isabs(line):
            out.append(line)
        else:
            out.append(str(path.parent / line))
    return out


def expand_inputs(inputs: Sequence[str], out_dir: Optional[str] = None) -> List[str]:
    """The rasters named by ``inputs`` in order, each once (see :class:`BatchRequest`).

    Files inside ``out_dir`` are left out (our own outputs). Raises :class:`UserError` for an
    input that does not exist or a folder without rasters. Paths inside list files are not
    checked here: a missing one becomes a failed scene.
    """
    out_root = Path(out_dir) if out_dir else None
    found: List[str] = []
    for raw in inputs:
        s = str(raw)
        if _is_vsi(s):
            found.append(s)
            continue
        p = Path(s)
        if not p.exists():
            raise UserError(f"{p}: input not found")
        if p.is_dir():
            rasters = sorted(str(q) for q in p.iterdir()
                             if q.is_file() and q.suffix.lower() in RASTER_SUFFIXES
                             and not (out_root is not None and _is_inside(q, out_root)))
            if not rasters:
                raise UserError(f"{p}: folder holds no rasters ({', '.join(RASTER_SUFFIXES)})")
            found.extend(rasters)
        elif p.suffix.lower() in LIST_SUFFIXES:
            listed = _read_list(p)
            if not listed:
                raise UserError(f"{p}: the list of inputs is empty")
            found.extend(listed)
        else:
            found.append(s)
    seen = set()
    unique = []
    for f in found:
        k = f if _is_vsi(f) else str(Path(f).resolve())
        if k not in seen:
            seen.add(k)
            unique.append(f)
    return unique


def _stem_of(path: str) -> str:
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if "." in name else name


def _block_windows(width: int, height: int, size: int, overlap: int
                   ) -> List[Tuple[int, int, int, int, int, int]]:
    """Blocks ``(row, col, col_off, row_off, w, h)`` of nearly equal size (at most ``size``
    plus the overlap) covering the raster, neighbours overlapping by ``overlap`` pixels."""
    def cuts(n: int) -> List[Tuple[int, int]]:
        k = max(1, math.ceil(n / size))
        edges = [round(i * n / k) for i in range(k + 1)]
        spans = []
        for i in range(k):
            a = edges[i] - (overlap // 2 if i > 0 else 0)
            b = edges[i + 1] + (overlap - overlap // 2 if i < k - 1 else 0)
            spans.append((max(0, a), min(n, b)))
        return spans

    out = []
    for r, (y0, y1) in enumerate(cuts(height)):
        for c, (x0, x1) in enumerate(cuts(width)):
            out.append((r, c, x0, y0, x1 - x0, y1 - y0))
    return out


def _crs_text(crs: Any) -> Optional[str]:
    if crs is None:
        return None
    epsg = crs.to_epsg() if hasattr(crs, "to_epsg") else None
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


def plan_items(rasters: Sequence[str], req: BatchRequest,
               known_stems: Optional[Dict[str, str]] = None
               ) -> Tuple[List[_Scene], List[Item]]:
    """Scenes and items for ``rasters``: output stems (unique; ``known_stems`` image -> stem
    from a manifest keeps earlier names), and blocks for rasters larger than the block size.
    A raster that cannot be opened becomes a scene with ``error`` and no item."""
    from gis.io import open_raster

    out = Path(req.out_dir)
    ex = req.extraction
    scenes: List[_Scene] = []
    items: List[Item] = []
    used = set((known_stems or {}).values())
    for image in rasters:
        stem = (known_stems or {}).get(image)
        if stem is None:
            base = _stem_of(image)
            stem, n = base, 2
            while stem in used:
                stem, n = f"{base}_{n}", n + 1
            used.add(stem)
        sc = _Scene(stem=stem, image=image)
        scenes.append(sc)
        try:
            info = open_raster(image, allow_pixel_coords=ex.allow_pixel_coords)
        except EXPECTED_ERRORS as exc:
            sc.error, sc.state = str(as_user_error(exc)), "failed"
            continue
        sc.crs = _crs_text(info.crs)
        sc.transform = tuple(float(v) for v in tuple(info.transform)[:6])
        sc.width, sc.height = int(info.width), int(info.height)
        t = info.transform
        splittable = (info.crs is not None and t.b == 0 and t.d == 0 and ex.aoi is None
                      and ex.bbox is None)
        if splittable and max(sc.width, sc.height) > int(req.block_size_px):
            blocks = _block_windows(sc.width, sc.height, int(req.block_size_px),
                                    int(req.block_overlap_px))
            sc.blocks = [max(b[0] for b in blocks) + 1, max(b[1] for b in blocks) + 1]
            for r, c, x0, y0, w, h in blocks:
                x_a, y_a = t @ (x0, y0)
                x_b, y_b = t @ (x0 + w, y0 + h)
                key = f"{stem}_r{r:03d}_c{c:03d}"
                items.append(Item(key=key, scene=stem, image=image,
                                  out_dir=str(out / f"{stem}_blocks"), stem=key,
                                  block=(x0, y0, w, h),
                                  bbox=(min(x_a, x_b), min(y_a, y_b), max(x_a, x_b),
                                        max(y_a, y_b)),
                                  bbox_crs=info.crs.to_wkt()))
                sc.items.append(key)
        else:
            items.append(Item(key=stem, scene=stem, image=image, out_dir=str(out), stem=stem))
            sc.items.append(stem)
    return scenes, items


# --------------------------------------------------------------------------------------------
# the task (runs on a worker)
# --------------------------------------------------------------------------------------------
def _worker_threads() -> int:
    try:
        from distributed import get_worker

        return max(1, int(get_worker().state.nthreads))
    except Exception:  # noqa: BLE001 - not on a worker
        return 0


def _log_event(topic: Optional[str], msg: Dict[str, Any]) -> None:
    if not topic:
        return
    try:
        from distributed import get_worker

        get_worker().log_event(topic, msg)
    except Exception:  # noqa: BLE001 - progress must never break the item
        pass


def _read_summary(path: Path) -> Optional[Dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) and d.get("status") == "success" else None


def run_item(item: Dict[str, Any], template: ExtractionRequest, cancel_flag: Optional[str] = None,
             topic: Optional[str] = None) -> Dict[str, Any]:
    """Run one item (a scene or a block) with :func:`run_extraction`; the Dask task.

    Returns ``{"state": "done"|"failed"|"cancelled", "error", "road_km", "area_km2", "time_s",
    "window", "summary_path", "adopted"}``. An item whose complete outputs already stand (a
    worker that died after its commit) is adopted instead of being run again.
    """
    # one worker thread = one core: single-threaded ONNX Runtime, no concurrent calls. The
    # setting lasts for the item only: an in-process worker shares os.environ with its client.
    with _worker_cores(_worker_threads()):
        return _run_item(Item.from_dict(item), template, cancel_flag, topic)


_cores_lock = threading.Lock()
_cores_state: Dict[str, Any] = {"users": 0, "saved": None}


@contextlib.contextmanager
def _worker_cores(threads: int) -> Iterator[None]:
    """Set ``$ROADSEG_CORES`` to ``threads`` while the block runs (nothing when 0), and put the
    previous value back when the last concurrent item of this process ends."""
    if not threads:
        yield
        return
    with _cores_lock:
        if _cores_state["users"] == 0:
            _cores_state["saved"] = os.environ.get("ROADSEG_CORES")
        _cores_state["users"] += 1
        os.environ["ROADSEG_CORES"] = str(threads)
    try:
        yield
    finally:
        with _cores_lock:
            _cores_state["users"] -= 1
            if _cores_state["users"] == 0:
                if _cores_state["saved"] is None:
                    os.environ.pop("ROADSEG_CORES", None)
                else:
                    os.environ["ROADSEG_CORES"] = _cores_state["saved"]


def _run_item(it: Item, template: ExtractionRequest, cancel_flag: Optional[str],
              topic: Optional[str]) -> Dict[str, Any]:
    t0 = time.perf_counter()
    summary_path = Path(it.out_dir) / f"{it.stem}_summary.json"
    if not template.overwrite:
        prev = _read_summary(summary_path)
        if prev is not None:
            return {"state": "done", "error": None, "road_km": prev.get("road_km"),
                    "area_km2": prev.get("area_km2"), "time_s": 0.0,
                    "window": prev.get("window"), "summary_path": str(summary_path),
                    "adopted": True}
    if it.block is not None:
        Path(it.out_dir).mkdir(parents=True, exist_ok=True)
    req = dataclasses.replace(template, image=it.image, out_dir=it.out_dir, stem=it.stem,
                              bbox=it.bbox if it.bbox is not None else template.bbox,
                              bbox_crs=it.bbox_crs or template.bbox_crs)
    last = {"t": 0.0, "stage": None}

    def on_progress(done: int, total: int, stage: str) -> None:
        now = time.monotonic()
        if stage == last["stage"] and done < total and now - last["t"] < 0.5:
            return
        last["t"], last["stage"] = now, stage
        _log_event(topic, {"item": it.key, "stage": stage, "done": int(done),
                           "total": int(total)})

    checked = {"t": 0.0, "v": False}

    def should_cancel() -> bool:
        if cancel_flag is None:
            return False
        now = time.monotonic()
        if now - checked["t"] > 0.5:
            checked["t"], checked["v"] = now, os.path.exists(cancel_flag)
        return bool(checked["v"])

    _log_event(topic, {"item": it.key, "stage": "start", "done": 0, "total": 1})
    res = run_extraction(req, on_progress=on_progress, should_cancel=should_cancel)
    state = {"success": "done", "cancelled": "cancelled"}.get(res.status, "failed")
    s = res.summary
    return {"state": state, "error": res.error, "road_km": s.get("road_km"),
            "area_km2": s.get("area_km2"), "time_s": round(time.perf_counter() - t0, 3),
            "window": s.get("window"), "summary_path": res.summary_path, "adopted": False}


# --------------------------------------------------------------------------------------------
# manifest
# --------------------------------------------------------------------------------------------
def _parameters(req: BatchRequest) -> Dict[str, Any]:
    d = req.extraction.to_dict()
    for k in ("image", "out_dir", "stem", "overwrite"):
        d.pop(k, None)
    d["block_size_px"] = int(req.block_size_px)
    d["block_overlap_px"] = int(req.block_overlap_px)
    return json.loads(json.dumps(d, default=str))


def _write_json(path: Path, doc: Dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2, default=str)
        f.write("\n")
    os.replace(tmp, path)


def _load_manifest(out: Path, params: Dict[str, Any], overwrite: bool) -> Optional[Dict]:
    path = out / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable batch manifest ({exc.__class__.__name__}); "
                        "remove it to start over") from None
    if overwrite:
        return doc
    old = doc.get("parameters", {})
    diff = sorted(k for k in set(old) | set(params) if old.get(k) != params.get(k))
    if diff:
        raise UserError(f"{out}: holds a batch run with other options ({', '.join(diff)}); "
                        "use overwrite to redo it, or another output folder")
    return doc


# --------------------------------------------------------------------------------------------
# joining networks
# --------------------------------------------------------------------------------------------
def _footprint(sc: _Scene, window: Optional[Sequence[int]]):
    from affine import Affine

    from gis.merge import footprint_polygon

    t = Affine(*sc.transform)
    if window:
        return footprint_polygon(t, int(window[2]), int(window[3]), int(window[0]),
                                 int(window[1]))
    return footprint_polygon(t, sc.width, sc.height)


def _read_edges(path: str):
    import geopandas as gpd

    return gpd.read_file(path, layer="edges")


def _write_network_gpkg(edges, nodes, dest: Path, overwrite: bool = True) -> None:
    """Write a GeoPackage (edges, nodes, styles) via a hidden temporary name, then rename."""
    from gis.vector_io import write_vectors

    stage = dest.parent / f"{_STAGING_PREFIX}{uuid.uuid4().hex[:10]}"
    stage.mkdir()
    try:
        written = write_vectors({"edges": edges, "nodes": nodes}, stage / dest.name,
                                overwrite=False, style=True)
        for p in sorted({Path(v) for v in written.values()} | set(stage.iterdir())):
            if p.is_file():
                os.replace(p, dest.parent / p.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _join_blocks(sc: _Scene, items: Dict[str, Item], out: Path, snap_m: float) -> None:
    """Join the blocks of a split scene into ``<stem>_roads.gpkg`` and ``<stem>_summary.json``
    in ``out``, and VRT mosaics of its probability and mask rasters."""
    from affine import Affine

    from gis.merge import NetworkPart, footprint_polygon, merge_networks

    t0 = time.perf_counter()
    t = Affine(*sc.transform)
    parts, centres = [], []
    for key in sc.items:
        it = items[key]
        x0, y0, w, h = it.block
        roads = Path(it.out_dir) / f"{it.stem}_roads.gpkg"
        parts.append(NetworkPart(_read_edges(str(roads)), footprint_polygon(t, w, h, x0, y0),
                                 name=key, footprint_crs=sc.crs))
        centres.append(t @ (x0 + w / 2.0, y0 + h / 2.0))
    merged = merge_networks(parts, crs=parts[0].edges.crs, snap_m=snap_m, centres=centres)
    _write_network_gpkg(merged.edges, merged.nodes, out / f"{sc.stem}_roads.gpkg")
    vrts = {}
    for kind in ("prob", "mask"):
        dest = out / f"{sc.stem}_{kind}.vrt"
        _write_block_vrt(sc, [items[k] for k in sc.items], kind, dest)
        vrts[f"{kind}.vrt"] = str(dest)
    s = merged.summary()
    area = sum((items[k].area_km2 or 0.0) for k in sc.items)
    footprint = _footprint(sc, None)
    summary = {
        "status": "success", "image": sc.image, "crs": sc.crs, "blocks": sc.blocks,
        "road_km": s["total_km"], "edges": s["edges"], "nodes": s["nodes"],
        "components": s["components"], "merge": merged.stats,
        "area_km2_blocks": area, "window": [0, 0, sc.width, sc.height],
        "footprint_wkt": footprint.wkt,
        "outputs": {"roads.gpkg": str(out / f"{sc.stem}_roads.gpkg"), **vrts},
        "block_outputs": {k: items[k].summary_path for k in sc.items},
        "timings_s": {"join": round(time.perf_counter() - t0, 3)},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    _write_json(out / f"{sc.stem}_summary.json", summary)
    sc.road_km = s["total_km"]
    sc.roads = str(out / f"{sc.stem}_roads.gpkg")


def _write_block_vrt(sc: _Scene, items: List[Item], kind: str, dest: Path) -> None:
    """A VRT mosaic of the blocks' ``<key>_<kind>.tif``: each block contributes the pixels
    it owns (its window less half of each overlap), so the mosaic has no seams of doubled data."""
    import rasterio
    from shapely.geometry import box

    from gis.merge import ownership_cores

    boxes = [box(it.block[0], it.block[1], it.block[0] + it.block[2], it.block[1] + it.block[3])
             for it in items]
    cores = ownership_cores(boxes)
    first = Path(items[0].out_dir) / f"{items[0].stem}_{kind}.tif"
    with rasterio.open(first) as ds:
        count, dtype = ds.count, ds.dtypes[0]
        nodata = ds.nodata
    gdal_type = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "float32": "Float32"
                 }.get(dtype, "Float32")
    t = sc.transform
    lines = [f'<VRTDataset rasterXSize="{sc.width}" rasterYSize="{sc.height}">']
    if sc.crs:
        from pyproj import CRS as ProjCRS

        lines.append(f"  <SRS>{su.escape(ProjCRS.from_user_input(sc.crs).to_wkt())}</SRS>")
    lines.append(f"  <GeoTransform>{t[2]!r}, {t[0]!r}, {t[1]!r}, {t[5]!r}, {t[3]!r}, "
                 f"{t[4]!r}</GeoTransform>")
    for band in range(1, count + 1):
        lines.append(f'  <VRTRasterBand dataType="{gdal_type}" band="{band}">')
        if nodata is not None:
            lines.append(f"    <NoDataValue>{nodata}</NoDataValue>")
        for it, core in zip(items, cores):
            if core.is_empty:
                continue
            c0, r0, c1, r1 = (int(round(v)) for v in core.bounds)
            x0, y0 = it.block[0], it.block[1]
            src = os.path.relpath(Path(it.out_dir) / f"{it.stem}_{kind}.tif", dest.parent)
            lines += [
                "    <SimpleSource>",
                f'      <SourceFilename relativeToVRT="1">{su.escape(src)}</SourceFilename>',
                f"      <SourceBand>{band}</SourceBand>",
                f'      <SrcRect xOff="{c0 - x0}" yOff="{r0 - y0}" xSize="{c1 - c0}" '
                f'ySize="{r1 - r0}"/>',
                f'      <DstRect xOff="{c0}" yOff="{r0}" xSize="{c1 - c0}" ySize="{r1 - r0}"/>',
                "    </SimpleSource>",
            ]
        lines.append("  </VRTRasterBand>")
    lines.append("</VRTDataset>")
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, dest)


def _merge_scenes(scenes: List[_Scene], out: Path, target_crs: Optional[str], snap_m: float
                  ) -> Optional[Dict[str, Any]]:
    from gis.merge import NetworkPart, merge_networks

    done = [s for s in scenes if s.state in ("done", "skipped") and s.roads]
    if not done:
        return None
    t0 = time.perf_counter()
    parts = [NetworkPart(_read_edges(s.roads), _footprint(s, s.footprint), name=s.stem,
                         footprint_crs=s.crs) for s in done]
    merged = merge_networks(parts, crs=target_crs or parts[0].edges.crs, snap_m=snap_m)
    dest = out / MERGED_NAME
    _write_network_gpkg(merged.edges, merged.nodes, dest)
    s = merged.summary()
    return {"path": str(dest), "scenes": len(done), "road_km": s["total_km"],
            "edges": s["edges"], "nodes": s["nodes"], "components": s["components"],
            "join": merged.stats, "time_s": round(time.perf_counter() - t0, 3)}


# --------------------------------------------------------------------------------------------
# the cluster
# --------------------------------------------------------------------------------------------
def _connect(req: BatchRequest):
    """``(client, cluster or None)``; raises :class:`UserError` when no cluster can be had."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:  # pragma: no cover - a dependency
        raise UserError(f"batch extraction needs Dask distributed ({exc})") from exc
    if req.scheduler:
        try:
            return Client(req.scheduler, timeout="15s"), None
        except (OSError, TimeoutError, ValueError) as exc:
            raise UserError(f"{req.scheduler}: cannot reach the Dask scheduler "
                            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                            ) from None
    n = int(req.workers or os.cpu_count() or 1)
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                           silence_logs=logging.ERROR)
    return Client(cluster), cluster


# --------------------------------------------------------------------------------------------
# the batch
# --------------------------------------------------------------------------------------------
def _remove_staging(out: Path) -> None:
    for folder in [out] + [p for p in out.glob("*_blocks") if p.is_dir()]:
        for p in folder.glob(f"{_STAGING_PREFIX}*"):
            shutil.rmtree(p, ignore_errors=True)


def run_batch(req: BatchRequest, on_event: Optional[EventFn] = None,
              should_cancel: Optional[CancelFn] = None) -> BatchResult:
    """Run the batch ``req`` (module docstring). Raises :class:`UserError` for unusable inputs,
    options or cluster; per-scene problems are recorded, not raised. ``KeyboardInterrupt``
    during the run cancels it as ``should_cancel`` would, then propagates."""
    req.validate()
    t_start = time.perf_counter()
    out = Path(req.out_dir)
    if not out.exists():
        if not out.parent.is_dir():
            raise UserError(f"{out}: parent folder {out.parent} does not exist")
        out.mkdir()
    elif not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    rasters = expand_inputs(req.inputs, req.out_dir)
    params = _parameters(req)
    overwrite = bool(req.extraction.overwrite)
    manifest = _load_manifest(out, params, overwrite)
    old_items = {k: Item.from_dict(v) for k, v in (manifest or {}).get("items", {}).items()}
    known = {v.image: v.scene for v in old_items.values()}
    scenes, items_list = plan_items(rasters, req, known)
    items = {it.key: it for it in items_list}
    scene_of = {s.stem: s for s in scenes}
    if not overwrite:
        for key in items:
            old = old_items.get(key)
            if old is not None and old.state == "done" and old.summary_path and \
                    Path(old.summary_path).exists():
                items[key] = dataclasses.replace(old, state="skipped")
    snap_m = float(req.snap_m if req.snap_m is not None else req.extraction.vectorize.gap_m)
    batch_id = uuid.uuid4().hex[:10]
    cancel_flag = out / f"{_CANCEL_PREFIX}{batch_id}"
    counts = {"done": 0, "failed": 0}
    total = len(items)

    def emit(kind: str, **kw: Any) -> None:
        if on_event is None:
            return
        try:
            on_event(BatchEvent(kind, items_done=counts["done"], items_failed=counts["failed"],
                                items_total=total, **kw))
        except Exception:  # noqa: BLE001 - a broken display must not stop the batch
            log.exception("batch event callback failed")

    def save_manifest() -> None:
        _write_json(out / MANIFEST_NAME, {
            "format_version": _FORMAT_VERSION, "parameters": params,
            "inputs": list(req.inputs),
            "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "items": {k: {**it.to_dict(), "state": "done" if it.state == "skipped" else
                          ("pending" if it.state in ("running", "cancelled") else it.state)}
                      for k, it in items.items()}})

    for sc in scenes:
        if sc.error:
            counts["failed"] += 1
    emit("plan", message=f"{len(scenes)} scene(s), {total} item(s)")
    for it in items.values():
        if it.state == "skipped":
            counts["done"] += 1
            emit("item_skipped", item=it.key)
    save_manifest()

    todo = [it for it in items.values() if it.state != "skipped"]
    cluster_info: Dict[str, Any] = {}
    status = "completed"
    interrupted: Optional[BaseException] = None
    if todo:
        client, cluster = _connect(req)
        events: "queue.Queue[Dict[str, Any]]" = queue.Queue()
        topic = f"roadseg-batch-{batch_id}"
        try:
            cluster_info = {"scheduler": client.scheduler.address,
                            "workers": len(client.scheduler_info(n_workers=-1).get("workers", {}))
                            if _accepts_n_workers(client) else
                            len(client.scheduler_info().get("workers", {})),
                            "dashboard": client.dashboard_link, "local": cluster is not None}
            emit("cluster", message=str(cluster_info["dashboard"]))
            try:
                client.subscribe_topic(topic, lambda ev: events.put(ev[1] if isinstance(
                    ev, tuple) else ev))
            except Exception:  # noqa: BLE001 - progress only
                log.debug("no progress events from the workers", exc_info=True)
            template = dataclasses.replace(req.extraction, image="", out_dir=str(out),
                                           stem=None)
            futures = {}
            for it in todo:
                it.state, it.attempts = "pending", it.attempts + 1
                fut = client.submit(run_item, it.to_dict(), template, str(cancel_flag), topic,
                                    key=f"roadseg-{batch_id}-{it.key}", pure=False,
                                    retries=int(req.retries))
                futures[fut] = it
            pending = set(futures)
            started = set()
            cancelling_since: Optional[float] = None
            from distributed import wait

            while pending:
                _apply_events(events, items, started, emit)
                try:
                    if cancelling_since is None and should_cancel is not None and should_cancel():
                        raise KeyboardInterrupt
                    try:
                        wait(list(pending), timeout=0.3, return_when="FIRST_COMPLETED")
                    except TimeoutError:
                        pass
                    except _DASK_CANCELLED:
                        pass  # a future the scheduler cancelled: handled below, as finished
                except KeyboardInterrupt as exc:
                    if cancelling_since is not None:
                        raise
                    interrupted = exc if should_cancel is None or not should_cancel() else None
                    status = "cancelled"
                    cancelling_since = time.monotonic()
                    cancel_flag.touch()
                    not_started = [f for f in pending if futures[f].key not in started]
                    client.cancel(not_started)
                    emit("cancelled", message="stopping: finished items are kept")
                if cancelling_since is not None and \
                        time.monotonic() - cancelling_since > req.grace_s:
                    break
                # the events that came with these results first: an item's late 'start'
                # must be seen while it is still unfinished (_apply_events never moves a
                # finished item back to running)
                _apply_events(events, items, started, emit)
                for fut in [f for f in pending if f.done()]:
                    pending.discard(fut)
                    it = futures[fut]
                    _finish_item(fut, it, counts, emit, cancelling=cancelling_since is not None)
                    save_manifest()
                    sc = scene_of[it.scene]
                    if sc.blocks and all(items[k].state in ("done", "skipped")
                                         for k in sc.items):
                        try:
                            _join_blocks(sc, items, out, snap_m)
                            emit("scene_done", item=sc.stem)
                        except Exception as exc:  # noqa: BLE001
                            log.debug("joining blocks failed", exc_info=True)
                            sc.error = f"joining the blocks failed: {as_user_error(exc)}"
            for fut in pending:  # cancelled or given up after the grace period
                futures[fut].state = "pending"
            _apply_events(events, items, started, emit)
        finally:
            try:
                client.close()
                if cluster is not None:
                    cluster.close()
            except Exception:  # noqa: BLE001
                log.debug("closing the cluster failed", exc_info=True)
            try:
                cancel_flag.unlink()
            except FileNotFoundError:
                pass
            save_manifest()
            _remove_staging(out)

    if status == "completed":
        # every item must have ended done, skipped or failed: an unfinished one in a batch
        # that was not cancelled is reported as failed, by name, never passed over
        for it in items.values():
            if it.state not in ("done", "skipped", "failed"):
                log.error("%s: item %s ended %r in a batch that was not cancelled", out,
                          it.key, it.state)
                it.error = (f"{_item_label(it)}: did not finish (state {it.state!r}) although "
                            "the batch was not cancelled; run the batch again to redo it")
                it.state = "failed"
                counts["failed"] += 1
        save_manifest()

    # ---- scene states, merge, summary -----------------------------------------------------
    for sc in scenes:
        _scene_state(sc, items, out)
        if sc.blocks and sc.state in ("done", "skipped") and sc.roads is None:
            # every block finished in an earlier run: (re)join the scene here
            try:
                _join_blocks(sc, items, out, snap_m)
            except Exception as exc:  # noqa: BLE001
                sc.state, sc.error = "failed", f"joining the blocks failed: {as_user_error(exc)}"
    merged = None
    if req.merge and status == "completed":
        emit("merge", message="started")
        try:
            merged = _merge_scenes(scenes, out, req.extraction.target_crs, snap_m)
        except Exception as exc:  # noqa: BLE001
            log.debug("merge failed", exc_info=True)
            merged = {"error": f"merging the networks failed: {as_user_error(exc)}"}
        emit("merge", message="done")
    elapsed = time.perf_counter() - t_start
    summary = _batch_summary(scenes, items, merged, cluster_info, status, elapsed, out)
    summary_path = out / SUMMARY_NAME
    _write_json(summary_path, summary)
    emit("finished" if status == "completed" else "cancelled", message=str(summary_path))
    if interrupted is not None:
        raise interrupted
    return BatchResult(status, summary, str(summary_path),
                       merged.get("path") if merged else None)


def _accepts_n_workers(client: Any) -> bool:
    import inspect

    try:
        return "n_workers" in inspect.signature(client.scheduler_info).parameters
    except (TypeError, ValueError):
        return False


def _apply_events(events: "queue.Queue[Dict[str, Any]]", items: Dict[str, Item],
                  started: set, emit: Callable[..., None]) -> None:
    """Take the workers' progress events off ``events``: the first event of an item marks it
    ``running`` (``item_started``), later ones become ``item_progress``.

    Events travel apart from the results (worker -> scheduler -> this client's event thread),
    so an item's ``start`` can be read only after its result: an item that has a final state
    (done, failed, skipped) keeps it, and its late events are dropped."""
    while True:
        try:
            ev = events.get_nowait()
        except queue.Empty:
            return
        key = ev.get("item")
        it = items.get(key)
        if it is None or it.state not in ("pending", "running"):
            continue
        if key not in started:
            started.add(key)
            it.state = "running"
            emit("item_started", item=key)
        if ev.get("stage") != "start":
            emit("item_progress", item=key, stage=ev.get("stage"),
                 done=int(ev.get("done", 0)), total=int(ev.get("total", 0)))


def _dask_cancelled_errors() -> Tuple[type, ...]:
    """What ``distributed.wait`` raises when a future in it was cancelled."""
    import asyncio
    import concurrent.futures

    out = [asyncio.CancelledError, concurrent.futures.CancelledError]
    try:
        from distributed.client import FuturesCancelledError

        out.append(FuturesCancelledError)
    except ImportError:  # pragma: no cover - older distributed
        pass
    return tuple(dict.fromkeys(out))


_DASK_CANCELLED = _dask_cancelled_errors()


def _item_label(it: Item) -> str:
    return f"{it.image} (block {it.key})" if it.block is not None else it.image


def _finish_item(fut: Any, it: Item, counts: Dict[str, int], emit: Callable[..., None],
                 cancelling: bool = False) -> None:
    """Record the outcome of ``it``'s finished future. Only a batch being cancelled leaves an
    item unfinished (``pending``, run again next time): an item that stopped as cancelled, or
    a future Dask cancelled, while the batch was not being cancelled is a failure."""
    if fut.status == "finished":
        r = fut.result()
        it.state = r["state"]
        it.error = r.get("error")
        it.road_km, it.area_km2 = r.get("road_km"), r.get("area_km2")
        it.time_s, it.window = r.get("time_s"), r.get("window")
        it.summary_path = r.get("summary_path")
        if it.state == "cancelled":
            if cancelling:
                it.state = "pending"
                return
            it.state = "failed"
            it.error = (f"{_item_label(it)}: the extraction stopped as cancelled although the "
                        f"batch was not cancelled ({it.error or 'no reason given'})")
    elif fut.status == "cancelled":
        if cancelling:
            it.state = "pending"
            return
        it.state = "failed"
        it.error = (f"{_item_label(it)}: Dask cancelled its task (scheduler connection lost "
                    "or the scheduler restarted); run the batch again to redo it")
    else:
        exc = fut.exception()
        name = type(exc).__name__
        if name == "KilledWorker":
            msg = "the worker running it died (too many times; see the Dask worker logs)"
        else:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else name
            msg = f"task failed: {name}: {text}"
        it.state, it.error = "failed", f"{it.image}: {msg}"
    if it.state == "done":
        counts["done"] += 1
        emit("item_done", item=it.key, message=f"{(it.road_km or 0.0):.3f} km")
    elif it.state == "failed":
        counts["failed"] += 1
        emit("item_failed", item=it.key, message=it.error or "failed")


def _scene_state(sc: _Scene, items: Dict[str, Item], out: Path) -> None:
    if sc.error and not sc.items:
        sc.state = "failed"
        return
    its = [items[k] for k in sc.items]
    states = {i.state for i in its}
    sc.time_s = round(sum(i.time_s or 0.0 for i in its), 3)
    sc.area_km2 = sum(i.area_km2 or 0.0 for i in its) if any(
        i.area_km2 is not None for i in its) else None
    if "failed" in states or sc.error:
        sc.state = "failed"
        bad = [i for i in its if i.state == "failed"]
        sc.error = sc.error or (bad[0].error if len(its) == 1 else
                                f"{len(bad)} of {len(its)} blocks failed; first: {bad[0].error}")
        return
    if states <= {"skipped"}:
        sc.state = "skipped"
    elif states <= {"done", "skipped"}:
        sc.state = "done"
    else:
        sc.state = "pending"
        return
    if sc.blocks:
        roads = out / f"{sc.stem}_roads.gpkg"
        summ = _read_summary(out / f"{sc.stem}_summary.json")
        if summ is not None and roads.exists() and sc.state == "skipped":
            sc.roads, sc.road_km = str(roads), summ.get("road_km")
        elif sc.roads is None and roads.exists() and summ is not None:
            sc.roads, sc.road_km = str(roads), summ.get("road_km")
        sc.footprint = None
    else:
        it = its[0]
        sc.road_km = it.road_km
        sc.footprint = it.window
        summ = _read_summary(Path(it.summary_path)) if it.summary_path else None
        if summ is not None:
            gpkg = summ.get("outputs", {}).get("roads.gpkg")
            sc.roads = gpkg if gpkg and Path(gpkg).exists() else None


def _batch_summary(scenes: List[_Scene], items: Dict[str, Item], merged: Optional[Dict],
                   cluster: Dict[str, Any], status: str, elapsed: float, out: Path
                   ) -> Dict[str, Any]:
    rows = []
    for sc in scenes:
        rows.append({"scene": sc.stem, "image": sc.image, "state": sc.state,
                     "road_km": sc.road_km, "area_km2": sc.area_km2, "time_s": sc.time_s,
                     "error": sc.error if sc.state == "failed" else None,
                     "blocks": len(sc.items) if sc.blocks else None, "roads": sc.roads})
    ran = [r for r in rows if r["state"] == "done"]
    area = sum(r["area_km2"] or 0.0 for r in ran)
    hours = elapsed / 3600.0
    return {
        "status": status, "out_dir": str(out),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cluster": cluster,
        "totals": {
            "scenes": len(rows),
            "done": len(ran),
            "skipped": sum(r["state"] == "skipped" for r in rows),
            "failed": sum(r["state"] == "failed" for r in rows),
            "pending": sum(r["state"] == "pending" for r in rows),
            "items": len(items),
            "road_km": sum(r["road_km"] or 0.0 for r in rows
                           if r["state"] in ("done", "skipped")),
            "area_km2_run": area,
            "elapsed_s": round(elapsed, 3),
            "scenes_per_hour": (len(ran) / hours) if ran and hours > 0 else None,
            "km2_per_hour": (area / hours) if ran and hours > 0 else None,
        },
        "merged": merged,
        "scenes": rows,
    }
