"""A corpus as named documents, read one at a time: what ``gradsync train --data`` and
``gradsync prepare`` both read text from.

* text: a file, a folder (every file below it, hidden ones skipped) or a glob; one file is one
  document, named by its path relative to the files' common folder (the name decides the
  train/validation split, so it must not depend on where the corpus lies);
* JSON Lines (``*.jsonl``): one document per line, its ``text`` field (``--text-field``);
* Parquet (``*.parquet``): one document per row of the ``text`` column (needs ``pyarrow``);
* a Hugging Face ``datasets`` dataset saved with ``save_to_disk`` (a folder with
  ``dataset_info.json`` and ``*.arrow`` files): one document per row (needs ``pyarrow``;
  ``datasets`` itself is not needed).

Rows are named ``FILE#ROW``. Nothing is decoded: a document is bytes (UTF-8 for the rows).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gradsync.core.errors import DataError

ROW_FORMATS = (".jsonl", ".parquet", ".arrow")


@dataclass(frozen=True)
class Corpus:
    """The files of a corpus and how to read them."""

    files: list[Path]
    label: str
    kind: str  # "text", "jsonl", "parquet" or "arrow"
    text_field: str = "text"

    @property
    def n_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.files)

    def documents(self) -> Iterator[tuple[str, bytes]]:
        """(name, bytes) of every document, in a fixed order; empty documents are skipped."""
        names = _names(self.files)
        for f, name in zip(self.files, names):
            if self.kind == "text":
                data = _read(f)
                if data:
                    yield name, data
            else:
                for row, text in enumerate(_rows(f, self.kind, self.text_field)):
                    if text:
                        yield f"{name}#{row}", text.encode("utf-8")


def open_corpus(files: list[Path], label: str, text_field: str = "text") -> Corpus:
    """A corpus of ``files`` (already resolved from a path, folder or glob): text, unless every
    file is JSON Lines, Parquet or Arrow (a saved ``datasets`` folder's metadata files are left out)."""
    arrow = [f for f in files if f.suffix == ".arrow"]
    if arrow and any(f.name == "dataset_info.json" for f in files):
        return Corpus(arrow, label, "arrow", text_field)
    suffixes = {f.suffix for f in files}
    if len(suffixes) == 1 and (s := suffixes.pop()) in ROW_FORMATS:
        return Corpus(files, label, s[1:], text_field)
    return Corpus(files, label, "text", text_field)


def _names(files: list[Path]) -> list[str]:
    if len(files) == 1:
        return [files[0].name]
    common = Path(os.path.commonpath([str(p.resolve()) for p in files]))
    return [str(p.resolve().relative_to(common)) for p in files]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read data file '{path}': {e.strerror}") from None


def _rows(path: Path, kind: str, field: str) -> Iterator[str]:
    if kind == "jsonl":
        with open(path, "rb") as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError:
                    raise DataError(f"{path}, line {i}: not JSON; JSON Lines hold one object per line") from None
                if not isinstance(obj, dict) or not isinstance(obj.get(field), str):
                    raise DataError(f"{path}, line {i}: no string field '{field}' (choose it with --text-field)")
                yield obj[field]
        return
    try:
        import pyarrow as pa
        import pyarrow.ipc
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"reading {kind} files needs pyarrow: pip install 'gradsync[prepare]'") from None
    try:
        if kind == "parquet":
            pf = pq.ParquetFile(path)
            if field not in pf.schema_arrow.names:
                raise DataError(
                    f"{path}: no column '{field}' (columns: {', '.join(pf.schema_arrow.names)}; "
                    "choose one with --text-field)"
                )
            batches: Iterator[pa.RecordBatch] = pf.iter_batches(columns=[field], batch_size=4096)
        else:
            reader = pa.ipc.open_stream(pa.memory_map(str(path)))
            if field not in reader.schema.names:
                raise DataError(
                    f"{path}: no column '{field}' (columns: {', '.join(reader.schema.names)}; "
                    "choose one with --text-field)"
                )
            batches = iter(reader)
        for batch in batches:
            for value in batch.column(batch.schema.get_field_index(field)).to_pylist():
                yield value if isinstance(value, str) else ""
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"cannot read {kind} file '{path}': {str(e).splitlines()[0]}") from None
