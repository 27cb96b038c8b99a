"""Property-based tests (hypothesis) of the two doors user input comes through: configuration
values and data files. Whatever arrives, the result is a valid config / token stream or a
one-line GradsyncError that says what is wrong, never another exception (a traceback)."""

from __future__ import annotations

import struct
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradsync.core.args import parse_dotted
from gradsync.core.config import all_keys, build_config
from gradsync.core.errors import GradsyncError
from gradsync.data import ShardedBatches, TokenSequences, load_tokens

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

absurd = st.one_of(
    st.text(max_size=30),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(
        [
            "",
            "0",
            "-1",
            "nan",
            "inf",
            "1e309",
            "true",
            "none",
            "zero2:",
            "diloco:8,,",
            "powersgd:rank=",
            "topk:ratio=1e-400",
            "bucketed+fp16",
            "\x00",
            "ü" * 50,
        ]
    ),
)


def _one_line(e: GradsyncError) -> None:
    assert str(e) and "\n" not in str(e)


@SETTINGS
@given(key=st.sampled_from(all_keys()), value=absurd)
def test_any_value_for_any_key_is_accepted_or_one_line_error(key: str, value: str) -> None:
    try:
        cfg = build_config(None, {key: value})
    except GradsyncError as e:
        _one_line(e)
        return
    assert cfg.parallel.strategy_spec.name and cfg.parallel.compress_spec.name  # valid specs once built


@SETTINGS
@given(args=st.lists(st.text(min_size=1, max_size=20), max_size=4))
def test_any_leftover_command_line_is_parsed_or_one_line_error(args: list[str]) -> None:
    try:
        build_config(None, parse_dotted(args))
    except GradsyncError as e:
        _one_line(e)


def _load(path: Path, seq_len: int = 16) -> None:
    cfg = build_config(None, {"data.source": str(path), "data.seq_len": seq_len})
    data = load_tokens(cfg.data)
    ShardedBatches(TokenSequences(data.train, seq_len), 8, 4, 0, 2, 0)  # what `gradsync train` checks before starting


@SETTINGS
@given(
    content=st.one_of(
        st.binary(max_size=4000),
        st.text(max_size=2000).map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.integers(min_value=0, max_value=200_000).map(lambda n: b"x" * n),  # one enormous line
        st.binary(min_size=1, max_size=64).map(lambda b: b * 3000),
    )
)
def test_any_text_file_loads_or_is_one_line_error(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "corpus.txt"
        path.write_bytes(content)
        try:
            _load(path)
        except GradsyncError as e:
            _one_line(e)


@SETTINGS
@given(
    tokens=st.integers(min_value=0, max_value=20_000),
    extra=st.integers(min_value=0, max_value=3),
    header=st.booleans(),
    claimed=st.integers(min_value=-5, max_value=10**9),
    version=st.integers(0, 3),
    dtype=st.sampled_from([np.uint16, np.int32, np.float32]),
)
def test_any_bin_shard_loads_or_is_one_line_error(
    tokens: int, extra: int, header: bool, claimed: int, version: int, dtype: type
) -> None:
    """Raw and llm.c-headered shards of the wrong dtype, truncated, padded or with a lying header."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "train_000.bin"
        body = np.random.default_rng(tokens).integers(0, 300, tokens).astype(dtype).tobytes() + b"\x01" * extra
        head = b""
        if header:
            head = struct.pack("<3i", 20240520, version, max(claimed, -1) & 0x7FFFFFFF) + b"\0" * (256 * 4 - 12)
        path.write_bytes(head + body)
        try:
            _load(path)
        except GradsyncError as e:
            _one_line(e)
