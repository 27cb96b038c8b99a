"""Throughput of ``gradsync prepare``: a generated corpus (``--gb``, default 1 GB: files of about
1 MB made of the standard library's sources, each a different rotation, so no two are equal)
tokenized with 1 and 2 processes, with the byte tokenizer and with a BPE ``tokenizer.json``
(vocabulary 4096, trained on the first 20 MB). Prints MB/s per setting (median of ``--repeats``)
and the 2-process / 1-process ratio measured in the same run.

    .venv/bin/python benchmarks/prepare_throughput.py [--gb 1.0] [--repeats 1] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sysconfig
import tempfile
from pathlib import Path

from gradsync.data.documents import open_corpus
from gradsync.data.shard_writer import prepare_shards
from gradsync.data.tokenizers import BPETokenizer


def make_corpus(root: Path, total_bytes: int, file_bytes: int = 1 << 20) -> list[Path]:
    stdlib = sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py"))
    text = b"".join(p.read_bytes() for p in stdlib if "site-packages" not in p.parts)
    files, written, i = [], 0, 0
    while written < total_bytes:
        start = (i * 7919 * 1021) % (len(text) - file_bytes)
        path = root / f"{i // 100:03d}" / f"doc{i:05d}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text[start : start + file_bytes])
        files.append(path)
        written += file_bytes
        i += 1
    return files


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gb", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--workers", default="1,2")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="gradsync-prepare-bench-") as tmp:
        root = Path(tmp)
        files = make_corpus(root / "corpus", int(args.gb * 1e9))
        sample = [p.read_bytes() for p in files[:20]]
        bpe = BPETokenizer.train_or_load(sample, 4096, root / "tok")
        bpe.save(root / "tokenizer.json")
        corpus = open_corpus(files, "generated")
        print(f"corpus: {len(files)} files, {corpus.n_bytes / 1e6:,.0f} MB")
        rates: dict[tuple[str, int], float] = {}
        for tokenizer in ("byte", str(root / "tokenizer.json")):
            for workers in (int(w) for w in args.workers.split(",")):
                runs = []
                for r in range(args.repeats):
                    out = root / f"out-{workers}-{r}"
                    res = prepare_shards(corpus, out, tokenizer, workers=workers, progress=False)
                    runs.append(res["mb_per_s"])
                    shutil.rmtree(out)
                name = "byte" if tokenizer == "byte" else "bpe-4096"
                rates[(name, workers)] = statistics.median(runs)
                print(
                    f"{name:9s} workers={workers}: {rates[(name, workers)]:7.1f} MB/s  (runs: "
                    + ", ".join(f"{x:.1f}" for x in runs)
                    + ")",
                    flush=True,
                )
        for name in ("byte", "bpe-4096"):
            ws = sorted(w for n, w in rates if n == name)
            if len(ws) > 1:
                print(f"{name}: {ws[-1]} / {ws[0]} processes = {rates[(name, ws[-1])] / rates[(name, ws[0])]:.2f}x")


if __name__ == "__main__":
    main()
