"""The pieces of ``gradsync prepare``: document readers for each format, the shard writer, and
the token stream that makes shard ends invisible."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gradsync.core.config import DataConfig
from gradsync.core.errors import DataError
from gradsync.data.documents import open_corpus
from gradsync.data.shard_writer import ShardWriter, prepare_shards
from gradsync.data.sources import load_tokens, read_shard
from gradsync.data.stream import TokenStream

TEXTS = [f"document {i}: " + "lorem ipsum dolor " * (i % 7 + 1) + "\u00e9t\u00e9" for i in range(60)]


def _expected(texts: list[str]) -> np.ndarray:
    return np.frombuffer("".join(texts).encode("utf-8"), dtype=np.uint8).astype(np.int64)


def _train_tokens(out: Path) -> np.ndarray:
    return np.concatenate([read_shard(p) for p in sorted(out.glob("train_*.bin"))]).astype(np.int64)


def _prepare(src: list[Path], out: Path, **kw: object) -> dict[str, object]:
    return prepare_shards(open_corpus(src, str(src[0])), out, workers=1, progress=False, **kw)  # type: ignore[arg-type]


def test_jsonl_parquet_and_a_saved_datasets_folder_give_the_same_tokens(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(TEXTS)), encoding="utf-8")
    parquet = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"text": TEXTS}), parquet, row_group_size=7)
    sources = {"jsonl": [jsonl], "parquet": [parquet]}
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": TEXTS}).save_to_disk(str(tmp_path / "saved"))
    sources["arrow"] = sorted(p for p in (tmp_path / "saved").rglob("*") if p.is_file())
    for kind, files in sources.items():
        corpus = open_corpus(files, kind)
        assert corpus.kind == kind
        r = prepare_shards(
            corpus, tmp_path / f"out-{kind}", val_fraction=0.0, workers=1, progress=False, shard_tokens=500
        )
        assert r["documents"] == len(TEXTS) and r["split"] == "by tail"
        assert np.array_equal(_train_tokens(tmp_path / f"out-{kind}"), _expected(TEXTS)), kind


def test_shards_are_llmc_files_cut_at_the_size_asked(tmp_path: Path) -> None:
    w = ShardWriter(tmp_path, "train", shard_tokens=1000, vocab_size=70000)
    w.write(np.arange(1500))
    w.write(np.arange(1500, 2600))
    paths = w.close()
    assert [p.name for p in paths] == ["train_000000.bin", "train_000001.bin", "train_000002.bin"]
    head = np.fromfile(paths[0], dtype="<i4", count=3)
    assert head.tolist() == [20240520, 2, 1000]  # uint32 tokens for a vocabulary over 65,536
    assert np.array_equal(np.concatenate([read_shard(p) for p in paths]), np.arange(2600))
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_stream_is_its_parts_concatenated_so_shard_ends_change_nothing() -> None:
    a = np.arange(5000) % 977
    whole, cut = TokenStream([a]), TokenStream([a[:1234], a[1234:1235], a[1235:4000], a[4000:]])
    for t in (8, 33, 128):
        ids = np.arange(whole.n_sequences(t))
        assert cut.n_sequences(t) == whole.n_sequences(t) == (len(a) - 1) // t
        assert np.array_equal(cut.sequences(ids, t), whole.sequences(ids, t))


def test_a_prepared_folder_loads_with_its_vocabulary_and_tokenizer(tmp_path: Path) -> None:
    src = tmp_path / "c"
    src.mkdir()
    for i, t in enumerate(TEXTS):
        (src / f"d{i}.txt").write_text(t * 5, encoding="utf-8")
    _prepare([src / f"d{i}.txt" for i in range(len(TEXTS))], tmp_path / "out", shard_tokens=700)
    data = load_tokens(DataConfig(source=str(tmp_path / "out"), seq_len=16))
    assert data.vocab_size == 256 and data.tokenizer is not None
    assert data.tokenizer.decode(data.train.head(8)) == data.tokenizer.decode(data.train.to_numpy()[:8])


@pytest.mark.parametrize(
    "write, needle",
    [
        (lambda d: (d / "x.jsonl").write_text('{"text": "a"}\nnot json\n'), "line 2: not JSON"),
        (lambda d: (d / "x.jsonl").write_text('{"body": "a"}\n'), "no string field 'text'"),
    ],
)
def test_bad_rows_are_one_line(tmp_path: Path, write, needle: str) -> None:
    write(tmp_path)
    with pytest.raises(DataError, match=needle):
        _prepare([tmp_path / "x.jsonl"], tmp_path / "out")


def test_the_output_folder_must_be_new_and_a_damaged_record_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello world " * 100)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.bin").write_bytes(b"x")
    with pytest.raises(DataError, match="exists and is not empty"):
        _prepare([tmp_path / "a.txt"], tmp_path / "out")
    _prepare([tmp_path / "a.txt"], tmp_path / "new")
    (tmp_path / "new" / "shards.json").write_text("{")
    with pytest.raises(DataError, match="is damaged"):
        load_tokens(DataConfig(source=str(tmp_path / "new"), seq_len=16))
