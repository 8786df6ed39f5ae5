"""Use cases: keyword-only functions over a unit of work and the ports. No HTTP here."""
