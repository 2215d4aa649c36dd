"""Error types of the GIS layer: each inherits :class:`GisError` and a builtin."""


class GisError(Exception):
    """Root of all gis errors."""


class RasterReadError(GisError, OSError):
    """A raster that cannot be opened or read (missing, not a raster, truncated)."""


class CRSError(GisError, ValueError):
    """A missing or unusable coordinate reference system."""


class AOIError(GisError, ValueError):
    """An area of interest that cannot be read or does not overlap the raster."""


class OutputExistsError(GisError, FileExistsError):
    """An output that exists and would be overwritten without ``overwrite=True``."""


class CancelledError(GisError):
    """The caller's ``should_cancel()`` returned True."""


class OutputDirError(GisError, FileNotFoundError):
    """The directory an output should go to does not exist."""


class InferenceError(GisError, ValueError):
    """A ``predict_fn`` returned something other than ``(N, K, H, W)`` probabilities."""


class VectorizeError(GisError, ValueError):
    """A mask or probability array that cannot be vectorized (wrong shape, no grid match)."""


class VectorWriteError(GisError, OSError):
    """A vector output (GeoPackage, Shapefile, GeoJSON, style) that cannot be written."""


class RasterWriteError(GisError, OSError):
    """A raster output that could not be written (disk full, GDAL driver error)."""
