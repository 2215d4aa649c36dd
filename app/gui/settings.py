"""Persistent settings (QSettings) of the GUI: recent files, last folders, extraction options.

Tests (and portable installs) point the settings at an INI file with the environment variable
``ROADSEG_GUI_SETTINGS`` or by passing ``path`` to :class:`AppSettings`.
"""
from __future__ import annotations

import os
from typing import Any, List, Optional

from PySide6.QtCore import QSettings

ORG = "RoadSeg"
APP = "RoadSeg Studio"
MAX_RECENT = 10
ENV_VAR = "ROADSEG_GUI_SETTINGS"


class AppSettings:
    """Typed access to the GUI's QSettings (native store, or an INI file for tests)."""

    def __init__(self, path: Optional[str] = None) -> None:
        path = path or os.environ.get(ENV_VAR) or None
        if path:
            self.qs = QSettings(str(path), QSettings.IniFormat)
        else:
            self.qs = QSettings(QSettings.IniFormat, QSettings.UserScope, ORG, APP)

    # generic ------------------------------------------------------------------------------
    def value(self, key: str, default: Any = None, type_: Optional[type] = None) -> Any:
        v = self.qs.value(key, default)
        if v is None:
            return default
        if type_ is bool:
            return v if isinstance(v, bool) else str(v).lower() in ("1", "true", "yes")
        if type_ is not None:
            try:
                return type_(v)
            except (TypeError, ValueError):
                return default
        return v

    def set_value(self, key: str, value: Any) -> None:
        self.qs.setValue(key, value)

    def sync(self) -> None:
        self.qs.sync()

    def string_list(self, key: str) -> List[str]:
        """A list of strings (INI files give a one-element list back as a plain string)."""
        v = self.qs.value(key, [])
        if v is None:
            return []
        if isinstance(v, str):
            return [v] if v else []
        return [str(p) for p in v]

    # recent files -------------------------------------------------------------------------
    def recent_files(self) -> List[str]:
        return self.string_list("recent/files")

    def add_recent_file(self, path: str) -> List[str]:
        path = os.path.abspath(str(path))
        files = [p for p in self.recent_files() if p != path]
        files.insert(0, path)
        files = files[:MAX_RECENT]
        self.qs.setValue("recent/files", files)
        return files

    def clear_recent_files(self) -> None:
        self.qs.setValue("recent/files", [])

    # folders ------------------------------------------------------------------------------
    def last_dir(self, kind: str = "open") -> str:
        return str(self.qs.value(f"dirs/{kind}", os.path.expanduser("~")))

    def set_last_dir(self, kind: str, path: str) -> None:
        d = path if os.path.isdir(path) else os.path.dirname(path)
        if d:
            self.qs.setValue(f"dirs/{kind}", d)
