"""The bootstrap file: the user's Python entry point for Python workers.

``disqontrold --bootstrap P`` (default ``./disqontrol_bootstrap.py``) may define
``setup_environment()``, called once per process that runs Python workers (its
return value is the ``environment``), and ``WORKERS = {name: factory}`` where
``factory(environment, name)`` returns a worker. The file is loaded lazily,
once per process, and never in the master: a forked consumer must not inherit
user code the master imported before a reload.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Optional

from disqontrol_client.errors import WorkerLoadError

DEFAULT_BOOTSTRAP = Path("disqontrol_bootstrap.py")
#: The name the bootstrap file is imported under.
MODULE_NAME = "disqontrol_bootstrap"
#: The separator of a ``"module:callable"`` worker name.
PATH_SEPARATOR = ":"

#: A worker reduced to one call: job -> result.
JobFunction = Callable[[Any], Any]

_UNSET = object()


class Bootstrap:
    """A loaded bootstrap file (or none) and the process's environment."""

    def __init__(self, path: Optional[Path], module: Optional[ModuleType]) -> None:
        self.path = path
        self.module = module
        self._environment: Any = _UNSET
        self.setup_calls = 0

    @property
    def workers(self) -> dict[str, Callable[[Any, str], Any]]:
        workers = getattr(self.module, "WORKERS", None) if self.module is not None else None
        return dict(workers) if isinstance(workers, dict) else {}

    @property
    def has_environment(self) -> bool:
        """Whether ``setup_environment()`` has returned in this process."""
        return self._environment is not _UNSET

    @property
    def environment(self) -> Any:
        """``setup_environment()``'s value, computed on first use only."""
        if self._environment is _UNSET:
            setup = getattr(self.module, "setup_environment", None)
            self._environment = setup() if callable(setup) else None
            self.setup_calls += 1
        return self._environment

    def find(self, name: Optional[str], key: str) -> tuple[str, Any]:
        """Locate a worker name without running user code beyond imports:
        ("factory", f) for a WORKERS entry, ("object", o) for a path."""
        if not name:
            raise WorkerLoadError(f"{key}: a Python worker needs a name: a key of WORKERS in the bootstrap file or 'module:callable'")
        workers = self.workers
        if name in workers:
            return "factory", workers[name]
        if PATH_SEPARATOR not in name:
            if self.path is None:  # `disqontrold --config etc/disqontrol.yml` run beside, not in, etc/
                raise WorkerLoadError(
                    f"{key}: {name!r} cannot be loaded: there is no bootstrap file to define it "
                    f"(./{DEFAULT_BOOTSTRAP} does not exist in {os.getcwd()}; name yours with --bootstrap PATH) "
                    "and it is not a 'module:callable' path"
                )
            known = ", ".join(sorted(workers)) or "(none)"
            raise WorkerLoadError(
                f"{key}: {name!r} cannot be loaded: it is not in WORKERS of {self.path} (known: {known}) "
                f"and is not a 'module:callable' path"
            )
        module_name, _, attr = name.partition(PATH_SEPARATOR)
        _extend_search_path(self.path)
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # the user's module failed to import: report why
            raise WorkerLoadError(f"{key}: {name!r} cannot be loaded: {type(exc).__name__}: {exc}") from exc
        target: Any = module
        for part in attr.split("."):
            try:
                target = getattr(target, part)
            except AttributeError as exc:
                raise WorkerLoadError(f"{key}: {name!r} cannot be loaded: {exc}") from None
        return "object", target

    def resolve(self, name: Optional[str], key: str = "worker.name") -> JobFunction:
        """The worker as a function of the job (factories are called here)."""
        kind, found = self.find(name, key)
        if kind == "factory":
            found = found(self.environment, name)
        else:
            self.environment  # noqa: B018 - setup_environment runs before any Python worker
            if inspect.isclass(found):
                found = found()
        process = getattr(found, "process", None)
        if callable(process):
            return process
        if callable(found):
            return found
        raise WorkerLoadError(f"{key}: {name!r} gave {found!r}, which is neither callable nor has a process(job) method")


def _extend_search_path(bootstrap: Optional[Path]) -> None:
    """Let the bootstrap file and ``module:callable`` names import modules
    next to the bootstrap file and in the working directory."""
    for directory in (os.getcwd(), str(bootstrap.parent) if bootstrap else None):
        if directory and directory not in sys.path:
            sys.path.insert(0, directory)


def _import_file(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(MODULE_NAME, path)
    if spec is None or spec.loader is None:
        raise WorkerLoadError(f"--bootstrap: {str(path)!r} cannot be imported as a Python file")
    module = importlib.util.module_from_spec(spec)
    _extend_search_path(path)
    sys.modules[MODULE_NAME] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's file failed: name it and why
        del sys.modules[MODULE_NAME]
        raise WorkerLoadError(f"--bootstrap: {str(path)!r} failed to load: {type(exc).__name__}: {exc}") from exc
    return module


def read_bootstrap(path: Optional[str | os.PathLike[str]] = None) -> Bootstrap:
    """Import the bootstrap file (uncached). An explicit path must exist;
    the default ./disqontrol_bootstrap.py may be missing."""
    if path is None:
        candidate = Path(os.path.abspath(DEFAULT_BOOTSTRAP))
        if not candidate.is_file():
            return Bootstrap(None, None)
    else:
        candidate = Path(os.path.abspath(path))
        if not candidate.is_file():
            raise WorkerLoadError(f"--bootstrap: {str(path)!r} does not exist or is not a file")
    return Bootstrap(candidate, _import_file(candidate))


_loaded: dict[Optional[Path], Bootstrap] = {}


def load_bootstrap(path: Optional[str | os.PathLike[str]] = None) -> Bootstrap:
    """The process's bootstrap, loaded on first use and then reused."""
    key = Path(os.path.abspath(path)) if path is not None else None
    if key not in _loaded:
        _loaded[key] = read_bootstrap(path)
    return _loaded[key]


def loaded_bootstrap(path: Optional[str | os.PathLike[str]] = None) -> Optional[Bootstrap]:
    """The process's bootstrap if it was loaded already; never imports it
    (an import of the user's file may hang as its setup can)."""
    return _loaded.get(Path(path).resolve() if path is not None else None)
