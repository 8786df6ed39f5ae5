"""The ``hartonomous`` command line."""

from hartonomous.cli.main import main

__all__ = ["main"]
