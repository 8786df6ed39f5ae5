"""The platform the functions of this app share, built once per worker process.

On Azure it is bootstrapped from settings on first use (never at import: indexing and cold
starts stay fast). ``hartonomous serve`` hands in the platform it already built, so timer
functions run locally against the same store as the API.
"""

from __future__ import annotations

import threading

from hartonomous.bootstrap import Platform, bootstrap

_platform: Platform | None = None
_lock = threading.Lock()


def platform() -> Platform:
    global _platform
    with _lock:
        if _platform is None:
            _platform = bootstrap()
        return _platform


def use(instance: Platform | None) -> None:
    """Set (or with None, forget) the shared platform."""
    global _platform
    with _lock:
        _platform = instance
