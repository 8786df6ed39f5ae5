"""Blob store adapters: a local folder (embedded default) and Azure Blob Storage."""
