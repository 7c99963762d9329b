"""The seam between the protocol layer and the clinical logic.

`evaluate` is the only function the protocol layer calls. It is pure: same request, record and
knowledge in, same result out (uuids aside). The pipeline stages behind it are
facts -> scenario -> rating -> cards.
"""

from __future__ import annotations

from cds_service.model import EngineResult, HookRequest, PatientRecord


def evaluate(request: HookRequest, record: PatientRecord, knowledge: object | None = None) -> EngineResult:
    """Rate the imaging orders of `request` for the patient in `record`.

    Placeholder until the knowledge-engine issue lands: no guidance.
    """
    return EngineResult()
