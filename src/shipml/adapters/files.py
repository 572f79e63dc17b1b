"""Reading CSV/Parquet data and writing result tables without leaving half-written files."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from shipml.errors import DataLoadError

CSV_SUFFIXES = (".csv", ".tsv", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    raise DataLoadError(f"{path}: unknown file type {suffix or '(none)'}: expected .csv or .parquet")


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise DataLoadError(f"{path}: file not found")
    if not path.is_file():
        raise DataLoadError(f"{path}: not a file")


def load_table(path: str | Path) -> pd.DataFrame:
    """The whole file as a DataFrame."""
    return pd.concat(list(iter_table(path, chunk_rows=None)), ignore_index=True)


def iter_table(path: str | Path, chunk_rows: int | None, text_columns: Sequence[str] = ()) -> Iterator[pd.DataFrame]:
    """The file in chunks of ``chunk_rows`` rows (all at once when None), so big files stream.

    ``text_columns`` (identifiers) are read from a CSV as text, as written: each chunk of a CSV would
    otherwise infer its own type (integers in one, floats after a null in the next, nothing in an empty one).
    """
    p = Path(path)
    _check_exists(p)
    kind = _kind(p)
    try:
        if kind == "csv":
            sep = "\t" if p.suffix.lower() == ".tsv" else ","
            dtype = dict.fromkeys(text_columns, "str")
            if chunk_rows is None:
                yield pd.read_csv(p, sep=sep, dtype=dtype)
            else:
                with pd.read_csv(p, sep=sep, chunksize=chunk_rows, dtype=dtype) as reader:
                    yield from reader
        else:
            file = pq.ParquetFile(p)
            if chunk_rows is None:
                yield file.read().to_pandas()
            else:
                for batch in file.iter_batches(batch_size=chunk_rows):
                    yield batch.to_pandas()
    except pd.errors.EmptyDataError:
        raise DataLoadError(f"{p}: file is empty") from None
    except pd.errors.ParserError as exc:
        raise DataLoadError(f"{p}: cannot parse CSV: {_first_line(exc)}") from None
    except (UnicodeDecodeError, pa.ArrowException, OSError) as exc:
        raise DataLoadError(f"{p}: cannot read {kind}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class AtomicTableWriter:
    """Writes chunks to a temporary file beside ``path``; renames it into place only on success."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.kind = _kind(self.path)
        if not self.path.parent.exists():
            raise DataLoadError(f"{self.path}: directory {self.path.parent} does not exist")
        self._tmp: Path | None = None
        self._parquet: pq.ParquetWriter | None = None
        self._csv: pacsv.CSVWriter | None = None
        self.rows = 0
        self._schema: pa.Schema | None = None  # the first chunk's, which every chunk is written with
        self._chunks = 0

    def __enter__(self) -> AtomicTableWriter:
        fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self._tmp = Path(name)
        return self

    def write(self, df: pd.DataFrame) -> None:
        """Append ``df``; every chunk is written with the first chunk's column types (the file has one schema)."""
        assert self._tmp is not None  # noqa: S101 - only inside `with`
        table = self._conformed(pa.Table.from_pandas(df, preserve_index=False))
        if self.kind == "parquet":
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self._tmp, table.schema)
            self._parquet.write_table(table)
        else:
            if self._csv is None:
                self._csv = pacsv.CSVWriter(self._tmp, table.schema)
            self._csv.write_table(table)
        self.rows += len(df)
        self._chunks += 1

    def _conformed(self, table: pa.Table) -> pa.Table:
        """``table`` cast to the schema of the first chunk written.

        Each chunk of a CSV infers its own types: an integer column with a null in a later chunk arrives as
        floats, a column null in every row of the first chunk has no type. A column without a type in the
        first chunk is written as text; a later chunk is cast safely (3.0 -> 3; 3.5 into integers refused).
        """
        if self._schema is None:
            fields = [pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f for f in table.schema]
            self._schema = pa.schema(fields, metadata=table.schema.metadata)
        if table.schema.equals(self._schema):
            return table
        if table.schema.names != self._schema.names:
            raise DataLoadError(
                f"{self.path}: chunk {self._chunks + 1} has columns {table.schema.names}, "
                f"the first chunk had {self._schema.names}"
            )
        try:
            return table.cast(self._schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise DataLoadError(
                f"{self.path}: chunk {self._chunks + 1} does not fit the column types of the first chunk "
                f"({_first_line(exc)}); convert the column to one type in the input"
            ) from None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for writer in (self._parquet, self._csv):
            if writer is not None:
                writer.close()
        assert self._tmp is not None  # noqa: S101
        if exc_type is None and self.rows:
            self._tmp.replace(self.path)
        else:
            self._tmp.unlink(missing_ok=True)


def read_yaml_file(path: str | Path) -> object:
    """A YAML file's content; a missing file or a syntax error names the file (and line:column)."""
    import yaml

    p = Path(path)
    _check_exists(p)
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{p}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(p)
        raise DataLoadError(f"{where}: invalid YAML: {getattr(exc, 'problem', None) or exc}") from None


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, so a reader never sees half of it."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    Path(name).replace(p)
