"""The service: an HTTP API over a tuning database (``tunesvc serve``)."""
