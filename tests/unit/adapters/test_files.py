from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from shipml.adapters.files import AtomicTableWriter, iter_table
from shipml.errors import DataLoadError


def _copy(source: Path, output: Path, chunk_rows: int) -> None:
    with AtomicTableWriter(output) as writer:
        for chunk in iter_table(source, chunk_rows):
            writer.write(chunk.assign(score=0.5))


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_an_integer_id_with_a_null_in_a_later_chunk_is_written(tmp_path: Path, suffix: str) -> None:
    """Each CSV chunk infers its own types: the null turns the later chunk's ids into floats."""
    (tmp_path / "in.csv").write_text("id,x\n1,a\n2,b\n3,c\n4,d\n,e\n6,f\n")
    _copy(tmp_path / "in.csv", tmp_path / f"out{suffix}", chunk_rows=2)
    out = pd.read_parquet(tmp_path / "out.parquet") if suffix == ".parquet" else pd.read_csv(tmp_path / "out.csv")
    assert out["id"].tolist()[:4] == [1, 2, 3, 4] and pd.isna(out["id"][4]) and out["id"][5] == 6
    if suffix == ".parquet":
        assert str(pq.read_schema(tmp_path / "out.parquet").field("id").type) == "int64"
    assert out["x"].tolist() == ["a", "b", "c", "d", "e", "f"]


def test_identifiers_read_as_text_have_one_type_in_every_chunk(tmp_path: Path) -> None:
    """A CSV's identifiers are read as written: a chunk where they are all null, then codes, then numbers."""
    (tmp_path / "in.csv").write_text("id,x\n,1\n,2\nk3,3\n007,4\n5,5\n")
    with AtomicTableWriter(tmp_path / "out.parquet") as writer:
        for chunk in iter_table(tmp_path / "in.csv", 2, text_columns=("id", "absent")):
            writer.write(chunk[["id"]])
    assert pq.read_table(tmp_path / "out.parquet").column("id").to_pylist() == [None, None, "k3", "007", "5"]


def test_a_chunk_that_cannot_take_the_first_chunks_types_is_refused_and_nothing_written(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("id\n1\n2\n3.5\n4\n")
    with pytest.raises(DataLoadError, match=r"out.parquet: chunk 2 does not fit the column types of the first chunk"):
        _copy(tmp_path / "in.csv", tmp_path / "out.parquet", chunk_rows=2)
    assert not list(tmp_path.glob("*out.parquet*"))
