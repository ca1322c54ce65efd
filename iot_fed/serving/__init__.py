"""The global model server (FastAPI): status, history, bundles, scoring."""
