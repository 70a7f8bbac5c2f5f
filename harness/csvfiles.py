"""Label CSVs read with the standard ``csv`` module, so every error names the file, line and column.

``read_table`` returns rows as dicts together with their line numbers; ``CsvRow`` helpers
turn a missing column, an empty or NaN cell or an unknown label into a one-line
``UserError`` such as ``train.csv, line 7, column 'diagnosis': unknown label '7' ...``.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from .errors import UserError

NAN_TEXT = {"", "nan", "NaN", "NAN", "na", "NA", "N/A", "null", "None"}


@dataclass
class CsvRow:
    """One data row: its values by column name and where it is (file, line)."""

    path: Path
    line: int
    values: Mapping[str, str]

    def where(self, column: str | None = None) -> str:
        """``file, line N[, column 'X']`` for messages."""
        col = f", column {column!r}" if column is not None else ""
        return f"{self.path}, line {self.line}{col}"

    def error(self, column: str | None, message: str) -> UserError:
        """A user error located at this row (and column)."""
        return UserError(f"{self.where(column)}: {message}")

    def get(self, column: str, required: bool = True) -> str:
        """The stripped cell; an empty/NaN cell is an error when ``required``."""
        value = (self.values.get(column) or "").strip()
        if required and value in NAN_TEXT:
            raise self.error(column, f"is empty or NaN ({value!r}); every row needs a value here")
        return value

    def label(self, column: str, classes: Sequence[str], aliases: Mapping[str, int] | None = None) -> int:
        """The class index of a label cell given by class name or index; unknown labels are errors."""
        value = self.get(column)
        if aliases and value in aliases:
            return aliases[value]
        if value in classes:
            return list(classes).index(value)
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if number.is_integer() and 0 <= int(number) < len(classes):
            return int(number)
        raise self.error(
            column, f"unknown label {value!r}; expected one of {list(classes)} (or an index 0..{len(classes) - 1})"
        )

    def number(self, column: str, required: bool = True) -> float:
        """A numeric cell; text or NaN is an error naming the cell."""
        value = self.get(column, required)
        if not value and not required:
            return math.nan
        try:
            number = float(value)
        except ValueError:
            raise self.error(column, f"unknown label {value!r}; expected a number") from None
        if math.isnan(number):
            raise self.error(column, "is NaN; every row needs a value here")
        return number


def read_table(path: str | Path, required: Sequence[str] = (), what: str = "CSV file") -> list[CsvRow]:
    """All data rows of a CSV file; a missing file or required column is a user error naming it."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            reader.fieldnames = header
            missing = [c for c in required if c not in header]
            if missing:
                raise UserError(
                    f"{path}, line 1: missing column {missing[0]!r} (the {what} needs columns "
                    f"{list(required)}; it has {[h for h in header if h]})"
                )
            return list(_rows(path, reader))
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8 CSV") from None
    except csv.Error as exc:
        raise UserError(f"{path} is not a valid CSV file: {exc}") from None


def _rows(path: Path, reader: csv.DictReader) -> Iterator[CsvRow]:
    start = 2
    for values in reader:
        end = reader.line_num
        if any((v or "").strip() for k, v in values.items() if k is not None and isinstance(v, str)):
            yield CsvRow(path, start, values)
        start = end + 1


def read_list(path: str | Path, what: str) -> list[str]:
    """Non-empty stripped lines of a text file (e.g. NIH's ``test_list.txt``)."""
    path = Path(path)
    try:
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist") from None
