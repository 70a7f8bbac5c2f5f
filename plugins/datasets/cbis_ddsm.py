"""CBIS-DDSM (Lee et al. 2017): benign vs malignant mammography findings from the TCIA DICOM files.

Layout: the four case-description CSVs next to the TCIA download's ``CBIS-DDSM`` folder::

    <root>/mass_case_description_train_set.csv   mass_case_description_test_set.csv
    <root>/calc_case_description_train_set.csv   calc_case_description_test_set.csv
    <root>/CBIS-DDSM/Mass-Training_P_00001_LEFT_CC/<study>/<series>/<file>.dcm
    <root>/CBIS-DDSM/Mass-Training_P_00001_LEFT_CC_1/<study>/<series>/<file>.dcm   (ROI crop and mask)

Columns (mass; calc has ``breast density``, ``calc type``, ``calc distribution``):
``patient_id,breast_density,left or right breast,image view,abnormality id,abnormality type,
mass shape,mass margins,assessment,pathology,subtlety,image file path,cropped image file path,
ROI mask file path``. ``pathology`` is MALIGNANT (1), BENIGN or BENIGN_WITHOUT_CALLBACK (0).

The CSV paths (``<case>/<study UID>/<series UID>/000000.dcm``) are used when they exist under
``<root>`` or ``<root>/CBIS-DDSM``; the NBIA downloader instead names folders by date and
series description, so otherwise the file is found inside the case folder (first path
component): the full mammogram is its one DICOM file, the ROI crop the file in the
``cropped images`` series (by folder name, else the SeriesDescription tag, else the smaller
of crop and mask).

Specs: ``cbis-ddsm/mass`` and ``cbis-ddsm/calc`` classify full mammograms (malignant if any
finding on the image is); ``cbis-ddsm/mass-roi`` and ``cbis-ddsm/calc-roi`` classify the ROI
crop of each finding. The official train/test CSVs are the train and test splits; validation
is carved from train by ``patient_id``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from medfm.datasets import (
    CsvRow,
    Dataset,
    DatasetSpec,
    Sample,
    build_dataset,
    default_data_root,
    file_dataset_limits,
    file_dataset_options,
    hookimpl,
    parse_options,
    read_table,
    require_file,
    require_root,
)

CLASSES = ("benign", "malignant")
PATHOLOGY = {"MALIGNANT": 1, "BENIGN": 0, "BENIGN_WITHOUT_CALLBACK": 0}
COLUMNS = ["patient_id", "pathology", "image file path", "cropped image file path"]
CITATION = (
    "Lee, R. S. et al. A curated mammography data set for use in computer-aided detection and diagnosis "
    "research. Scientific Data 4, 170177 (2017); Sawyer-Lee, R. et al. CBIS-DDSM, TCIA (2016), "
    "doi:10.7937/K9/TCIA.2016.7O02S9CY"
)
LICENSE = "CC BY 3.0 (The Cancer Imaging Archive)"


def layout(kind: str) -> str:
    """The expected layout, for error messages."""
    return (
        f"<root>/{kind}_case_description_train_set.csv, <root>/{kind}_case_description_test_set.csv and the "
        "TCIA DICOM folders in <root>/CBIS-DDSM/<case>/.../*.dcm"
    )


class FileFinder:
    """Finds the DICOM file of a CSV path in either the CSV's layout or the NBIA download's."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cases: dict[str, Path] | None = None

    def cases(self) -> dict[str, Path]:
        """Case folder name -> path, for folders named like ``Mass-Training_P_00001_LEFT_CC[_1]``."""
        if self._cases is None:
            self._cases = {}
            for base in (self.root, self.root / "CBIS-DDSM", *self.root.glob("*/CBIS-DDSM")):
                if base.is_dir():
                    for d in base.iterdir():
                        if d.is_dir() and d.name.startswith(("Mass-", "Calc-")):
                            self._cases.setdefault(d.name, d)
        return self._cases

    def find(self, csv_path: str, crop: bool) -> Path:
        """The file for ``csv_path`` (a non-existent path under root when it cannot be found)."""
        literal = [self.root / csv_path, self.root / "CBIS-DDSM" / csv_path]
        for p in literal:
            if p.is_file():
                return p
        folder = self.cases().get(csv_path.split("/")[0])
        files = sorted(folder.rglob("*.dcm")) if folder else []
        if not files:
            return literal[0]
        if not crop or len(files) == 1:
            return files[0]
        named = [f for f in files if "cropped" in f.parent.name.lower()]
        if len(named) == 1:
            return named[0]
        described = [f for f in files if _series_description(f) == "cropped images"]
        if len(described) == 1:
            return described[0]
        return min(files, key=lambda f: f.stat().st_size)  # the crop is smaller than the full-size mask


def _series_description(path: Path) -> str:
    import pydicom

    try:
        return (
            str(
                pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesDescription"]).get(
                    "SeriesDescription", ""
                )
            )
            .strip()
            .lower()
        )
    except Exception:
        return ""


def label_of(row: CsvRow) -> int:
    """1 for MALIGNANT, 0 for BENIGN and BENIGN_WITHOUT_CALLBACK; anything else names the cell."""
    value = row.get("pathology")
    if value not in PATHOLOGY:
        raise row.error("pathology", f"unknown label {value!r}; expected one of {sorted(PATHOLOGY)}")
    return PATHOLOGY[value]


def make_load(kind: str, roi: bool):
    """The loader of one abnormality type, full image or ROI crop."""

    def load(spec: DatasetSpec, **options: Any) -> Dataset:
        opts = parse_options(spec.name, options, default_data_root("cbis-ddsm"))
        root = require_root(spec.name, opts.root, layout(kind))
        finder = FileFinder(root)
        by_image: dict[str, Sample] = {}
        samples = []
        for split, part in (("train", "train"), ("test", "test")):
            csv_path = require_file(spec.name, root / f"{kind}_case_description_{part}_set.csv", layout(kind))
            for row in read_table(csv_path, COLUMNS, "CBIS-DDSM case description"):
                label = label_of(row)
                column = "cropped image file path" if roi else "image file path"
                rel = row.get(column).replace("\\", "/")
                case = rel.split("/")[0]
                if roi:
                    samples.append(
                        Sample(
                            finder.find(rel, crop=True),
                            label,
                            case,
                            row.get("patient_id"),
                            split,
                            source=row.where(column),
                        )
                    )
                elif case in by_image:  # several findings on one image: malignant if any is
                    s = by_image[case]
                    s.label = max(int(cast(int, s.label)), label)  # mass/calc sets are binary: an int label
                else:
                    by_image[case] = Sample(
                        finder.find(rel, crop=False),
                        label,
                        case,
                        row.get("patient_id"),
                        split,
                        source=row.where(column),
                    )
        samples += list(by_image.values())
        info = {"abnormality": kind, "image": "ROI crop" if roi else "full mammogram", "grouped_by": "patient_id"}
        return build_dataset(spec.name, "binary", CLASSES, samples, opts, info)

    return load


@hookimpl
def register_datasets(register):
    """CBIS-DDSM mass and calcification, full mammograms and ROI crops."""
    for kind, word in (("mass", "masses"), ("calc", "calcifications")):
        for roi in (False, True):
            register(
                DatasetSpec(
                    name=f"cbis-ddsm/{kind}" + ("-roi" if roi else ""),
                    load=make_load(kind, roi),
                    task="binary",
                    classes=CLASSES,
                    splits={"train": None, "val": None, "test": None},
                    primary_metric="auroc",
                    modality="mammography (DICOM)",
                    license=LICENSE,
                    citation=CITATION,
                    revision="1",
                    options=file_dataset_options(),
                    limits=file_dataset_limits(),
                    description=f"CBIS-DDSM {word}, {'ROI crops' if roi else 'full mammograms'}: benign vs malignant "
                    "(BENIGN_WITHOUT_CALLBACK = benign); official train/test, val by patient",
                )
            )
