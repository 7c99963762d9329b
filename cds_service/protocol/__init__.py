"""CDS Hooks 2.0 HTTP layer: discovery, request validation, prefetch and FHIR fallback, JWT auth,
CORS, feedback, and the response contract (`validate_response`, usable from any test)."""

from cds_service.protocol.validator import validate_response

__all__ = ["validate_response"]
