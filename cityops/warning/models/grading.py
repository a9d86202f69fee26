"""Emergency grading of a geological threat (险情) from people to relocate or potential loss (domain §7).

Boundary convention: "以上" includes the number (≥), "以下" excludes it; the more severe of the two wins.
"""

from __future__ import annotations

# (grade, label, people ≥, loss ≥ yuan), most severe first.
THREAT_GRADES = (("I", "特大型", 1000, 100_000_000), ("II", "大型", 500, 50_000_000), ("III", "中型", 100, 5_000_000))


def threat_grade(people: int = 0, potential_loss_yuan: float = 0.0) -> tuple[str, str]:
    if people < 0 or potential_loss_yuan < 0:
        raise ValueError("people and potential loss must not be negative")
    for grade, label, min_people, min_loss in THREAT_GRADES:
        if people >= min_people or potential_loss_yuan >= min_loss:
            return grade, label
    return "IV", "小型"
