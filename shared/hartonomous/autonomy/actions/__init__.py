"""The executors of the registry's actions (``registry.py`` holds their contracts)."""
