"""WSGI entry point: `gunicorn cds_service.wsgi:app` (configuration from CDS_* variables)."""

from __future__ import annotations

import gc
import os

from cds_service.app import create_app
from cds_service.protocol.access_log import configure_logging

configure_logging(os.environ.get("CDS_LOG_LEVEL", "INFO"))
app = create_app()
gc.freeze()  # the loaded knowledge base is permanent: keep it out of every GC pass
