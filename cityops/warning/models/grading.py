"""Emergency grading of a geological threat (险情) from people to relocate or potential loss (domain §7).

Boundary convention: "以上" includes the number (≥), "以下" excludes it; the more severe of the two wins. The
grades are the catalogue's ``[threat_grades]``.
"""

from __future__ import annotations


def threat_grade(people: int, potential_loss_yuan: float, grades, below: tuple[str, str]) -> tuple[str, str]:
    """``grades`` = (grade, label, people ≥, loss ≥ yuan), most severe first; ``below`` when none is reached."""
    if people < 0 or potential_loss_yuan < 0:
        raise ValueError("people and potential loss must not be negative")
    for grade, label, min_people, min_loss in grades:
        if people >= min_people or potential_loss_yuan >= min_loss:
            return grade, label
    return below
