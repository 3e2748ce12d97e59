"""Parquet part files of an inference job: stable shards, whole parts, a folder that describes itself."""

from __future__ import annotations

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow", reason="pyarrow is a test requirement (the Parquet output)")
import pyarrow.parquet as pq  # noqa: E402

from taidpt.serve.parquet_parts import (  # noqa: E402
    ParquetOutputError,
    finished_shards,
    job_description,
    plan_shards,
    rows_table,
    sweep_temporary,
    write_part,
)

CLASSES = ("cat", "dog")
DESC = job_description(CLASSES, "ab" * 32, {"rule": "top_k", "k": 1}, shard_size=2)


def test_shards_are_stable_whatever_the_listing_order():
    a = plan_shards(["c.jpg", "a.jpg", "b.jpg", "a.jpg", "d.jpg", "e.jpg"], 2)
    b = plan_shards(["e.jpg", "d.jpg", "c.jpg", "b.jpg", "a.jpg"], 2)
    assert a == b and [s.paths for s in a] == [("a.jpg", "b.jpg"), ("c.jpg", "d.jpg"), ("e.jpg",)]
    assert a[2].part_name == "part-000002.parquet"
    with pytest.raises(ParquetOutputError):
        plan_shards(["a"], 0)


def test_parts_read_back_as_one_table_with_the_job_in_the_schema(tmp_path):
    shards = plan_shards(["x.jpg", "y.jpg", "z.jpg"], 2)
    scores = np.array([[1.5, -0.5], [0.25, 2.0]], dtype=np.float32)
    confidence = np.array([[0.8, np.nan], [0.6, np.nan]], dtype=np.float32)
    write_part(tmp_path / "out.parquet", shards[0],
               rows_table(DESC, shards[0].paths, scores, [["cat"], ["dog"]], confidence, [None, None]))
    write_part(tmp_path / "out.parquet", shards[1], rows_table(DESC, shards[1].paths, None, None, None, ["not an image"]))
    table = pq.read_table(tmp_path / "out.parquet")
    rows = table.sort_by("path").to_pylist()
    assert [r["path"] for r in rows] == ["x.jpg", "y.jpg", "z.jpg"]
    assert rows[0]["scores"] == [1.5, -0.5] and rows[0]["confidence"][1] is None and rows[1]["labels"] == ["dog"]
    assert rows[2]["error"] == "not an image" and rows[2]["scores"] is None
    assert table.schema.field("scores").type == pa.list_(pa.float32())
    assert finished_shards(tmp_path / "out.parquet", DESC) == {0, 1}


def test_a_folder_of_another_job_is_refused_and_temporaries_are_swept(tmp_path):
    folder = tmp_path / "out.parquet"
    shard = plan_shards(["x.jpg"], 2)[0]
    write_part(folder, shard, rows_table(DESC, shard.paths, None, None, None, ["e"]))
    other = job_description(CLASSES, "cd" * 32, {"rule": "top_k", "k": 1}, shard_size=2)
    with pytest.raises(ParquetOutputError, match="model_sha256"):
        finished_shards(folder, other)
    (folder / ".part-000001.parquet.123.tmp").write_bytes(b"half")
    assert finished_shards(folder, DESC) == {0} and sweep_temporary(folder) == 1
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(ParquetOutputError, match="notes.txt"):
        finished_shards(folder, DESC)
