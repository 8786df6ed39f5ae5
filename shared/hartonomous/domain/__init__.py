"""Domain types: plain data, no I/O."""
