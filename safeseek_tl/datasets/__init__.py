"""Request sets for real models: the bundled harmful, harmless and over-refusal sets, loaders for the
standard files users bring, and alignment records built from a model's own refusals.

- :func:`load_bundled` (``harmful``, ``harmless``, ``overrefusal``; frozen train/validation/test
  splits: docs/datasets.md);
- :func:`load_advbench`, :func:`load_harmbench`, :func:`load_jailbreakbench`, :func:`load_xstest`
  (:class:`Request` records) and :func:`load_alpaca` (benign records);
- :func:`split_requests`: the bundled sets' split rule, for any list of requests;
- :func:`alignment_records` (``prompt``, the model's own ``refuse``, a compliant ``accept``) and
  :func:`benign_records` (``prompt``, the model's own ``response``), which the ``discover``,
  ``evaluate`` and ``guard`` commands read once written with ``safeseek data export``.
"""

from safeseek_tl.datasets.alignment import alignment_records, benign_records
from safeseek_tl.datasets.bundled import BUNDLED_SETS, bundled_path, load_bundled
from safeseek_tl.datasets.formats import load_advbench, load_alpaca, load_harmbench, load_jailbreakbench, load_xstest
from safeseek_tl.datasets.openings import compliant_opening
from safeseek_tl.datasets.requests import SPLITS, Request, split_requests

__all__ = [
    "BUNDLED_SETS",
    "SPLITS",
    "Request",
    "alignment_records",
    "benign_records",
    "bundled_path",
    "compliant_opening",
    "load_advbench",
    "load_alpaca",
    "load_bundled",
    "load_harmbench",
    "load_jailbreakbench",
    "load_xstest",
    "split_requests",
]
