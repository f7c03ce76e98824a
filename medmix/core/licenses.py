"""License policy: licenses are data (an SPDX id on every row), and a recipe says what it accepts.

The rule users can predict: a license that allows commercial use and redistribution is accepted
by default; anything non-commercial, no-derivatives, gated (no redistribution) or unknown is
refused until the recipe (`licenses.accept`) or the command line (`--accept-license ID`) names
that exact id. Evaluation benchmarks are refused in a pretraining recipe unless named in
`licenses.allow_eval` — training on a test set is the most expensive silent mistake in this field.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# Commercial use and redistribution allowed (share-alike obligations are recorded, not refused).
PERMISSIVE = frozenset({
    "CC0-1.0", "PDDL-1.0", "Unlicense", "MIT", "Apache-2.0", "BSD-2-Clause", "BSD-3-Clause",
    "ODC-By-1.0", "CC-BY-2.0", "CC-BY-2.5", "CC-BY-3.0", "CC-BY-4.0", "CC-BY-SA-3.0", "CC-BY-SA-4.0",
    "CDLA-Permissive-2.0", "CDLA-Sharing-1.0", "ODbL-1.0",
})


@dataclass(frozen=True)
class LicenseTerms:
    spdx: str
    commercial: bool
    redistribution: bool
    derivatives: bool
    share_alike: bool
    known: bool

    @property
    def needs_acceptance(self) -> bool:
        return not (self.known and self.commercial and self.redistribution and self.derivatives)

    def summary(self) -> str:
        if not self.known:
            return "unknown terms: review before use"
        parts = ["commercial use " + ("allowed" if self.commercial else "NOT allowed"),
                 "redistribution " + ("allowed" if self.redistribution else "NOT allowed")]
        if not self.derivatives:
            parts.append("no derivatives")
        if self.share_alike:
            parts.append("share-alike")
        return "; ".join(parts)


# Gated terms that are not SPDX licenses, declared by the adapters that need them.
GATED = {
    "LicenseRef-Quilt-1M": LicenseTerms("LicenseRef-Quilt-1M", False, False, False, False, True),
}


def terms(spdx: str) -> LicenseTerms:
    """Classify an SPDX id (or a LicenseRef) by what it allows."""
    if spdx in GATED:
        return GATED[spdx]
    upper = spdx.upper()
    if spdx in PERMISSIVE:
        return LicenseTerms(spdx, True, True, True, "-SA" in upper or "SHARING" in upper, True)
    if upper.startswith("CC-BY"):
        return LicenseTerms(spdx, "-NC" not in upper, True, "-ND" not in upper, "-SA" in upper, True)
    return LicenseTerms(spdx, False, False, False, False, False)


def refused(licenses: Iterable[str], accepted: Iterable[str]) -> list[str]:
    """The licenses in `licenses` that need acceptance and were not accepted by id."""
    ok = set(accepted)
    return sorted({lic for lic in licenses if terms(lic).needs_acceptance and lic not in ok})
