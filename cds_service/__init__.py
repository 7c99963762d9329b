"""CDS Hooks 2.0 service rating oncology imaging orders."""

__version__ = "0.1.0"
