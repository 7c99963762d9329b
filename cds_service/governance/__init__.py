"""The governance view (issue 14): what the service advised and how clinicians answered, as counts.

`queries` reads the state tables (SQLAlchemy Core, SQLite or PostgreSQL); `web` serves them at
`/admin/` as HTML, CSV and JSON behind CDS_ADMIN_TOKEN; `charts` draws the page's SVG.
"""
