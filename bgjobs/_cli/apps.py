"""The command line's APP: which jobs it names, and the Flask app they run in.

::

    load_app("myapp.jobs")                                   # a module's JobRegistry
    load_app("myapp/jobs.py:registry")                       # a file's attribute
    load_app("examples/flask_app/app.py:create_app")         # a Flask app factory
    load_registry("myapp.jobs")                              # just the JobRegistry

:data:`APP_HELP` states the rules, and the ``bgjobs --help`` epilog prints it. A Flask
app counts only with the :class:`bgjobs.flask.BGJobs` extension set up: its registry is
the one given to the extension, every run happens inside ``app.app_context()`` (the run
context the extension itself gives its manager), and settings come from ``app.config``
over the environment. Neither Flask nor :mod:`bgjobs.flask` is imported here: a value is a
Flask app only when ``flask`` is already imported (by APP) and the value is a
``flask.Flask``, and the extension is recognised by what it keeps in
``app.extensions["bgjobs"]`` (:class:`ExtensionState`), so the command line never loads
the web face and the web face never loads the command line.

Every user mistake — a missing file, an import that raises, a module without jobs — is
an :class:`~bgjobs.errors.AppLoadError` with a one-line message that says the fix.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    List,
    Optional,
    Protocol,
    Tuple,
    cast,
    runtime_checkable,
)

from ..config import Settings
from ..errors import AppLoadError
from ..registry import JobRegistry
from ..types import BackgroundJobManager
from .console import exception_location, one_line

if TYPE_CHECKING:
    from flask import Flask

    from ..execution import RunContext

__all__ = [
    "APP_HELP",
    "EXTENSION_KEY",
    "ExtensionState",
    "LoadedApp",
    "extension_state",
    "from_flask_app",
    "load_app",
    "load_registry",
]

EXTENSION_KEY = "bgjobs"
"""Where the Flask extension keeps its state in ``app.extensions``; the same value as
:data:`bgjobs.flask.EXTENSION_KEY` (a test holds them equal)."""


@runtime_checkable
class ExtensionState(Protocol):
    """What this module reads from ``app.extensions["bgjobs"]``: the part of
    :class:`bgjobs.flask.BGJobsState` the command line needs, checked by its attributes
    so that loading APP never imports :mod:`bgjobs.flask`."""

    @property
    def registry(self) -> Optional[JobRegistry]:
        """The registry given to the extension; ``None`` if it was given none."""

    @property
    def manager(self) -> BackgroundJobManager:
        """The app's own manager, which may have scheduled the jobs already."""

    @property
    def settings(self) -> Settings:
        """``app.config`` over the environment, as the extension read them."""


APP_HELP = """\
APP is one of
  pkg.module            a module importable from the current directory
  path/to/file.py       a file; its directory is put on sys.path first, so it can
                        import its siblings (a file inside a package is imported
                        as part of that package)
optionally followed by
  :name                 an attribute of that module (dots allowed)
  :name()               a function of that module, called without arguments
APP may name
  a JobRegistry         its jobs
  a Flask app           the JobRegistry given to its BGJobs extension; every run
                        happens inside app.app_context(), and settings are read
                        from app.config over the environment
  an app factory        a function returning either, called without arguments
                        (like flask --app; without () only once flask is imported)
Without :name, the module's first match in this order:
  1. a Flask app with the BGJobs extension: the one named app or application,
     else the only one
  2. an app factory named create_app or make_app (once flask is imported)
  3. the JobRegistry named jobs, else the only JobRegistry"""
"""The rules for APP, as ``--help`` shows them."""

_FORMS = "pkg.module, pkg.module:attribute or path/to/file.py"
_APP_NAMES = ("app", "application")
_FACTORY_NAMES = ("create_app", "make_app")


@dataclass(frozen=True)
class LoadedApp:
    """What APP named: the jobs and, for a Flask app, the app they run in."""

    spec: str
    """How messages name APP: as given; for a Flask app, the app found
    (``app.py:create_app()``, ``app.py:app``) or, under ``flask bgjobs``, its import name."""
    registry: JobRegistry
    flask_app: Optional[Flask] = None
    """The Flask app whose BGJobs extension holds ``registry``; ``None`` for a bare registry."""
    settings: Optional[Settings] = None
    """The settings managers are built from: the extension's (app.config over the
    environment) for a Flask app; ``None`` means read from ``os.environ``."""
    manager: Optional[BackgroundJobManager] = None
    """The Flask extension's own manager, which may have scheduled the jobs when the app
    was created; ``None`` for a bare registry."""

    @property
    def run_context(self) -> Optional[RunContext]:
        """What every run happens inside: ``app.app_context`` for a Flask app, else ``None``."""
        return self.flask_app.app_context if self.flask_app is not None else None


def load_registry(spec: str) -> JobRegistry:
    """The :class:`JobRegistry` APP names (see :func:`load_app`)."""
    return load_app(spec).registry


def load_app(spec: str) -> LoadedApp:
    """Import APP (``pkg.module``, ``path/to/file.py``, either with ``:name`` or ``:name()``)
    and return what it names, by the rules of :data:`APP_HELP`.

    A file is imported under a name of its own (so ``jobs.py`` cannot shadow or be
    shadowed by another ``jobs`` module) after its directory is put on ``sys.path``; a file
    inside a package (its directory has an ``__init__.py``) is imported by its dotted name
    from the package root instead, as ``flask --app`` does, so its relative imports work.
    Raises :class:`AppLoadError` with a one-line message for every user mistake, including
    exceptions raised by the import or by an app factory.
    """
    text = spec.strip()
    if not text:
        raise AppLoadError(f"APP is empty; give {_FORMS}")
    target, attribute, call = _split_attribute(text)
    if _looks_like_path(target):
        module, root = _import_file(target)
    elif _is_dotted_name(target):
        module, root = _import_module(target), os.getcwd()
    else:
        raise AppLoadError(f"{target!r} is neither a .py file nor a module name; give {_FORMS}")
    found = _Finder(spec, target, root)
    if attribute is None:
        return found.in_module(module)
    return found.attribute(module, attribute, call)


def from_flask_app(app: Flask, spec: Optional[str] = None) -> LoadedApp:
    """The jobs of a Flask app with the BGJobs extension (``spec``: how to name it)."""
    shown = spec or app.import_name
    state = extension_state(app)
    if state is None:
        raise AppLoadError(
            f"{shown} is a Flask app without the bgjobs extension; set it up with "
            "bgjobs.flask.BGJobs(app, registry=jobs), or give APP as the JobRegistry itself"
        )
    if state.registry is None:
        raise AppLoadError(
            f"{shown} has the bgjobs extension but no JobRegistry; pass one: "
            "BGJobs(app, registry=jobs) or init_app(app, registry=jobs)"
        )
    return LoadedApp(shown, state.registry, app, state.settings, state.manager)


def extension_state(app: Flask) -> Optional[ExtensionState]:
    """The BGJobs extension's state on ``app``; ``None`` when it is not set up there."""
    state = app.extensions.get(EXTENSION_KEY)
    return state if isinstance(state, ExtensionState) else None


# --- what a module offers ------------------------------------------------------------------


def _is_flask_app(value: object) -> bool:
    flask = sys.modules.get("flask")  # not imported: then nothing here is a Flask app
    return flask is not None and isinstance(value, flask.Flask)


def _has_bgjobs(app: Any) -> bool:
    return extension_state(app) is not None


class _Finder:
    """Turns a module, or one of its attributes, into a :class:`LoadedApp`."""

    def __init__(self, spec: str, target: str, root: str) -> None:
        self.spec = spec
        self.target = target  # APP without :name, for messages
        self.root = root  # where the user's code lives, to point at its line in errors

    def attribute(self, module: ModuleType, attribute: str, call: bool) -> LoadedApp:
        """``APP:attribute`` (``call``: ``APP:attribute()``)."""
        shown = f"{self.target}:{attribute}"
        value: object = module
        for part in attribute.split("."):
            try:
                value = getattr(value, part)
            except AttributeError:
                raise AppLoadError(f"{self.target!r} has no attribute {attribute!r}") from None
        if call or (inspect.isfunction(value) and "flask" in sys.modules):
            return self._factory(value, shown)
        found = self._accept(value, shown)
        if found is None:
            raise AppLoadError(
                f"{shown} is a {type(value).__name__}, not a JobRegistry or a Flask app; "
                f"to call an app factory, write {shown}()"
            )
        return found

    def in_module(self, module: ModuleType) -> LoadedApp:
        """APP without ``:name``: the first match of the rules in :data:`APP_HELP`."""
        for name in _APP_NAMES:
            value = vars(module).get(name)
            if _is_flask_app(value) and _has_bgjobs(value):
                return from_flask_app(cast("Flask", value), f"{self.target}:{name}")
        apps = _by_identity(module, _is_flask_app)
        with_bgjobs = {name: app for name, app in apps.items() if _has_bgjobs(app)}
        if len(with_bgjobs) == 1:
            name, app = next(iter(with_bgjobs.items()))
            return from_flask_app(app, f"{self.target}:{name}")
        if with_bgjobs:
            raise AppLoadError(
                f"{self.target!r} has {len(with_bgjobs)} Flask apps with bgjobs "
                f"({', '.join(sorted(with_bgjobs))}); choose one with "
                f"{self.target}:{min(with_bgjobs)}"
            )
        if "flask" in sys.modules:
            for factory in _FACTORY_NAMES:
                if inspect.isfunction(getattr(module, factory, None)):
                    return self._factory(getattr(module, factory), f"{self.target}:{factory}")

        named = getattr(module, "jobs", None)
        if isinstance(named, JobRegistry):
            return LoadedApp(self.spec, named)
        registries = _by_identity(module, lambda value: isinstance(value, JobRegistry))
        if len(registries) == 1:
            return LoadedApp(self.spec, next(iter(registries.values())))
        if len(registries) > 1:
            first = min(registries)
            raise AppLoadError(
                f"{self.target!r} has {len(registries)} JobRegistry objects "
                f"({', '.join(sorted(registries))}); choose one with {self.target}:{first}"
            )
        if apps:  # Flask apps, none of them with the extension
            name = next((n for n in _APP_NAMES if n in apps), min(apps))
            raise AppLoadError(
                f"no JobRegistry in {self.target!r}, and its Flask app {name!r} does not have "
                "the bgjobs extension; set it up with bgjobs.flask.BGJobs(app, registry=jobs)"
            )
        raise AppLoadError(
            f"no JobRegistry in {self.target!r}; declare one as 'jobs = JobRegistry()' "
            "or point at it with APP:attribute"
        )

    def _accept(self, value: object, shown: str) -> Optional[LoadedApp]:
        if isinstance(value, JobRegistry):
            return LoadedApp(self.spec, value)
        if _is_flask_app(value):
            return from_flask_app(cast("Flask", value), shown)
        return None

    def _factory(self, factory: object, shown: str) -> LoadedApp:
        """Call an app factory without arguments; it must return a Flask app or a registry."""
        if not callable(factory):
            raise AppLoadError(f"{shown} is a {type(factory).__name__}, which cannot be called")
        try:
            inspect.signature(factory).bind()
        except TypeError:
            raise AppLoadError(
                f"{shown}() needs arguments, but an app factory is called without any; "
                "give its parameters defaults (def create_app(config=None))"
            ) from None
        except ValueError:  # no signature to check (some builtins): just call it
            pass
        try:
            value = factory()
        except (Exception, SystemExit) as exc:
            raise AppLoadError(_failure(f"calling {shown}()", exc, self.root)) from None
        found = self._accept(value, f"{shown}()")
        if found is None:
            raise AppLoadError(
                f"{shown}() returned a {type(value).__name__}, not a Flask app or a JobRegistry"
            )
        return found


def _by_identity(module: ModuleType, keep: Callable[[object], bool]) -> Dict[str, Any]:
    """The module's attributes that ``keep`` accepts, by name; one object under two names
    counts once (under its first name)."""
    found: Dict[int, Tuple[str, object]] = {}
    for name, value in vars(module).items():
        if keep(value):
            found.setdefault(id(value), (name, value))
    return dict(found.values())


# --- importing APP -----------------------------------------------------------------------------


def _split_attribute(spec: str) -> Tuple[str, Optional[str], bool]:
    """``(target, attribute or None, whether to call it)``; refuses a call with arguments."""
    target, sep, attribute = spec.rpartition(":")
    # "C:\\app\\jobs.py" is a Windows drive, not module:attribute.
    if not sep or not target or re.fullmatch(r"[A-Za-z]", target):
        return spec, None, False
    called = re.fullmatch(r"([\w.]+)\((.*)\)", attribute, re.S)
    if called is not None and _is_dotted_name(called.group(1)):
        if called.group(2).strip():
            raise AppLoadError(
                f"APP calls an app factory without arguments: write "
                f"{target}:{called.group(1)}() and read settings from the environment"
            )
        return target, called.group(1), True
    if _is_dotted_name(attribute):
        return target, attribute, False
    return spec, None, False


def _is_dotted_name(text: str) -> bool:
    return all(part.isidentifier() for part in text.split("."))


def _looks_like_path(target: str) -> bool:
    separators = [os.sep] + ([os.altsep] if os.altsep else [])
    return (
        target.endswith(".py") or any(sep in target for sep in separators) or os.path.isfile(target)
    )


def _import_file(target: str) -> Tuple[ModuleType, str]:
    """The module of a ``.py`` file, and the directory its imports are relative to."""
    path = os.path.realpath(target)
    if os.path.isdir(path):
        raise AppLoadError(
            f"{target!r} is a directory; give a .py file in it or a module name (pkg.jobs)"
        )
    if not os.path.isfile(path):
        hint = f" (did you mean {target + '.py'!r}?)" if os.path.isfile(path + ".py") else ""
        raise AppLoadError(f"no such file: {target!r}{hint}")
    directory = os.path.dirname(path)
    if os.path.isfile(os.path.join(directory, "__init__.py")):
        root, dotted = _package_import_name(path)
        _prepend_sys_path(root)
        module = _import_module(dotted, shown=target, root=root)
        loaded = getattr(module, "__file__", None)
        if loaded is None or os.path.realpath(loaded) != path:
            raise AppLoadError(
                f"{target!r} is module {dotted!r} of its package, but that name is already "
                f"imported from {loaded!r}"
            )
        return module, root

    _prepend_sys_path(directory)
    stem = re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
    name = f"bgjobs_app_{stem}_{hashlib.sha1(path.encode()).hexdigest()[:8]}"
    if name in sys.modules:  # the same file, loaded earlier in this process
        return sys.modules[name], directory
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise AppLoadError(f"cannot import {target!r}: not a Python source file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it, as a normal import does
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        del sys.modules[name]
        raise AppLoadError(_failure(f"importing {target!r}", exc, directory)) from None
    return module, directory


def _package_import_name(path: str) -> Tuple[str, str]:
    """``(directory to put on sys.path, dotted module name)`` for a file inside a package."""
    base = os.path.splitext(path)[0]
    if os.path.basename(base) == "__init__":
        base = os.path.dirname(base)
    parts: List[str] = []
    while True:
        base, name = os.path.split(base)
        parts.append(name)
        if not os.path.isfile(os.path.join(base, "__init__.py")):
            return base, ".".join(reversed(parts))


def _prepend_sys_path(directory: str) -> None:
    if directory not in sys.path:
        sys.path.insert(0, directory)


def _import_module(
    name: str, *, shown: Optional[str] = None, root: Optional[str] = None
) -> ModuleType:
    shown = shown or name
    if root is None:
        # Like `python -m` (and unlike a console script), find modules in the current directory.
        root = os.getcwd()
        _prepend_sys_path(root)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if name == missing or name.startswith(missing + "."):
            raise AppLoadError(
                f"no module named {missing!r} (APP is {_FORMS}; modules are looked up from "
                "the current directory)"
            ) from None
        raise AppLoadError(_failure(f"importing {shown!r}", exc, root)) from None
    except (Exception, SystemExit) as exc:
        raise AppLoadError(_failure(f"importing {shown!r}", exc, root)) from None


def _failure(action: str, exc: BaseException, root: str) -> str:
    """``importing 'x.py' failed: RuntimeError: no config (x.py:3)``: one line."""
    if isinstance(exc, SystemExit):
        return (
            f"{action} called sys.exit({exc.code!r}); "
            "guard that code with if __name__ == '__main__':"
        )
    where = ""
    if not isinstance(exc, SyntaxError):  # a SyntaxError's message already says where
        location = exception_location(exc.__traceback__, under=root)
        where = f" ({location})" if location else ""
    described = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return f"{action} failed: {one_line(described)}{where}"
