"""Make ``TrainingArguments(report_to=["tracker"])`` work in scripts that never import tracker.

transformers resolves ``report_to`` names from a dict in
``transformers.integrations.integration_utils`` (``INTEGRATION_TO_CALLBACK``) and has no
plugin hook. A one-line ``tracker_hf_hook.pth`` in site-packages (``PTH_TEXT`` below,
installed by setup.py) puts a tiny finder at the
front of ``sys.meta_path``; when (and only when) that transformers module is imported, the
finder comes here, lets the real loader execute the module and then adds ``"tracker"`` to
the table. Interpreter start-up only defines that finder: no import of tracker or
transformers. Set ``TRACKER_DISABLE_HF_HOOK=1`` to switch it off.

The table entry is a stand-in class that builds the real ``TrackerCallback`` when the
Trainer instantiates it, so processes that use transformers without reporting to tracker
never import tracker's transformers integration.

``report_to="all"`` (or ``["all"]``) means every integration transformers finds installed:
``TrainingArguments`` (and, in transformers 5, ``get_reporting_integration_callbacks``)
ask ``get_available_reporting_integrations()`` of the same module, which knows only its
own list. Registering wraps that function too, so that its answer includes ``"tracker"``.
In transformers 4.x, where ``report_to`` defaults to ``"all"``, an unset ``report_to``
therefore reports to tracker as it does to every other installed integration;
``report_to="none"`` (or ``TRACKER_DISABLE_HF_HOOK=1`` for scripts that do not import
tracker) leaves it out.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Any

TARGET = "transformers.integrations.integration_utils"
PACKAGE = "transformers.integrations"  # a lazy module: it caches what it handed out
NAME = "tracker"
AVAILABLE = "get_available_reporting_integrations"  # what report_to="all" resolves with

PTH_NAME = "tracker_hf_hook.pth"
# What setup.py writes into site-packages as PTH_NAME (it reads this constant from the
# source, without importing tracker). site executes lines that start with "import": this
# one defines a finder class and puts it first on sys.meta_path, once (a venv's lib64 ->
# lib link makes site read the same directory twice).
PTH_TEXT = (
    '# tracker: lets transformers\' report_to=["tracker"] find tracker '
    "(tracker/integrations/_hf_hook.py). Opt out with TRACKER_DISABLE_HF_HOOK=1.\n"
    "import sys; any(getattr(f, 'tracker_hook', False) for f in sys.meta_path) or "
    "sys.meta_path.insert(0, type('TrackerTransformersHook', (), {'tracker_hook': True, "
    "'find_spec': staticmethod(lambda name, path=None, target=None: "
    "__import__('tracker.integrations._hf_hook').integrations._hf_hook"
    ".find_spec(name, path, target) "
    "if name == 'transformers.integrations.integration_utils' else None)}))\n"
)


def find_spec(name: str, path: Any = None, target: Any = None) -> Any:
    """The meta-path hook: the real spec of ``TARGET``, its loader wrapped; else None."""
    if name != TARGET or os.environ.get("TRACKER_DISABLE_HF_HOOK"):
        return None
    for finder in list(sys.meta_path):
        if getattr(finder, "tracker_hook", False):
            continue
        find = getattr(finder, "find_spec", None)
        if find is None:
            continue
        spec = find(name, path, target)
        if spec is not None:
            break
    else:
        return None
    if spec.loader is not None and hasattr(spec.loader, "exec_module"):
        spec.loader = _RegisteringLoader(spec.loader)
    return spec


class _Finder:
    """The same hook as the ``.pth`` line installs, for :func:`install`."""

    tracker_hook = True
    find_spec = staticmethod(find_spec)


class _RegisteringLoader:
    """Runs the real loader, then registers tracker in the module it just executed."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        register(module)

    def __getattr__(self, name: str) -> Any:
        # get_source, get_filename, is_package...: tracebacks and inspect keep working.
        return getattr(self._loader, name)


class TrackerCallbackFactory:
    """Stands in ``INTEGRATION_TO_CALLBACK["tracker"]``; the Trainer calls it like a class.

    >>> callback = TrackerCallbackFactory()  # doctest: +SKIP
    >>> type(callback).__name__  # doctest: +SKIP
    'TrackerCallback'
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        from tracker.integrations.transformers import TrackerCallback

        return TrackerCallback(*args, **kwargs)


def register(module: Any = None) -> bool:
    """Add ``"tracker"`` to transformers' ``report_to`` table; True when it is there.

    ``module`` defaults to the already-imported transformers module, if any.
    """
    if module is None:
        module = sys.modules.get(TARGET)
    table = getattr(module, "INTEGRATION_TO_CALLBACK", None)
    if not isinstance(table, dict):
        return False
    table.setdefault(NAME, TrackerCallbackFactory)
    _join_all(module)
    return True


def _join_all(module: Any) -> None:
    """Make ``module.get_available_reporting_integrations()`` (``report_to="all"``)
    include tracker; once, however often registration runs."""
    original = getattr(module, AVAILABLE, None)
    if not callable(original) or getattr(original, "tracker_joined", False):
        return

    @functools.wraps(original)
    def available(*args: Any, **kwargs: Any) -> Any:
        names = list(original(*args, **kwargs))
        if NAME not in names:
            names.append(NAME)
        return names

    available.tracker_joined = True  # type: ignore[attr-defined]
    setattr(module, AVAILABLE, available)
    # ``from .integrations import get_available_reporting_integrations`` goes through the
    # package, which keeps the function it handed out before: hand out ours from now on.
    package = sys.modules.get(PACKAGE)
    if package is not None and vars(package).get(AVAILABLE) is original:
        setattr(package, AVAILABLE, available)


def install() -> None:
    """Register now if transformers is loaded, and put the finder in place for later."""
    register()
    if not any(getattr(f, "tracker_hook", False) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder)
