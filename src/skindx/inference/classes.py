"""The seven HAM10000 diagnostic classes, their names and clinical risk groups: the one
definition of the class list."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ClassInfo:
    code: str
    name: str
    risk_group: str  # malignant | pre-cancerous | benign
    urgency: str  # critical | high | medium | low

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


CLASS_INFO: dict[str, ClassInfo] = {
    info.code: info
    for info in (
        ClassInfo(
            "akiec", "Actinic keratosis / intraepithelial carcinoma", "pre-cancerous", "medium"
        ),
        ClassInfo("bcc", "Basal cell carcinoma", "malignant", "high"),
        ClassInfo("bkl", "Benign keratosis-like lesion", "benign", "low"),
        ClassInfo("df", "Dermatofibroma", "benign", "low"),
        ClassInfo("mel", "Melanoma", "malignant", "critical"),
        ClassInfo("nv", "Melanocytic nevus", "benign", "low"),
        ClassInfo("vasc", "Vascular lesion", "benign", "low"),
    )
}
# The one class list, in label order (label i is CLASS_CODES[i]). conf/data/ham10000.yaml's
# `classes` and dvc.yaml's per-class ROC plots are checked against it (tests/test_config.py).
CLASS_CODES: tuple[str, ...] = tuple(CLASS_INFO)
