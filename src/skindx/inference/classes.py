"""The seven HAM10000 diagnostic classes, their names and clinical risk groups."""

from __future__ import annotations

from dataclasses import asdict, dataclass

CLASS_CODES: tuple[str, ...] = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")


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
assert tuple(CLASS_INFO) == CLASS_CODES
