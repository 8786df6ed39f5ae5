"""The HTTP API (FastAPI): served by uvicorn locally and by the Functions catch-all on Azure."""
