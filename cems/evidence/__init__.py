"""Evidence case files: ``cems evidence export`` and ``cems evidence verify`` (docs/evidence.md).

* :mod:`cems.evidence._export`: one outlet and period → a zip of the raw packets (lines of the evidence
  archive, :mod:`cems.sinks.archive`), the readings decoded from them, hourly records, events,
  acknowledgements, marks, a manifest, ``SHA256SUMS`` and a bilingual README.
* :mod:`cems.evidence._verify`: every hash of a case file (or of an archive directory) checked again.
"""

from cems.evidence._export import CaseReads, CaseRequest, export_case, no_marks
from cems.evidence._verify import Problem, verify_archive, verify_case

__all__ = ["CaseReads", "CaseRequest", "Problem", "export_case", "no_marks", "verify_archive", "verify_case"]
