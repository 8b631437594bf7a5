"""edge.recording.mcap_io: mcap's Writer, with chunk bodies handed to the file instead of copied."""

from __future__ import annotations

import io
from importlib.metadata import version

import mcap.writer as mcap_writer
import numpy as np
import pytest
from mcap.data_stream import RecordBuilder
from mcap.reader import make_reader
from mcap.writer import CompressionType, Writer

from edge.recording.mcap_io import (
    BY_REFERENCE_BYTES,
    NO_AUTO_CHUNK,
    ZSTD_LEVEL,
    LevelledZstd,
    PieceBuffer,
    open_writer,
)


class _SpyFile(io.BytesIO):
    def __init__(self) -> None:
        super().__init__()
        self.write_sizes: list[int] = []

    def write(self, data) -> int:  # type: ignore[override]
        self.write_sizes.append(len(data))
        return super().write(data)


def _session(w: Writer) -> None:
    rng = np.random.default_rng(3)
    w.start(profile="p", library="test")
    w.add_metadata("meta", {"k": "v"})
    sid = w.register_schema("s", "raw", b"schema")
    big = w.register_channel("frames", "raw", sid)
    small = w.register_channel("blocks", "raw", sid)
    for chunk in range(3):
        for i in range(40):
            t = chunk * 1000 + i
            w.add_message(big, t, rng.integers(0, 255, 76_800, np.uint8).tobytes(), t, i)
            w.add_message(small, t, rng.integers(0, 255, 300, np.uint8).tobytes(), t, i)
        w.flush()
    w.finish()


def test_the_file_is_byte_for_byte_what_mcaps_own_writer_writes() -> None:
    kwargs = {"chunk_size": 1 << 62, "compression": CompressionType.ZSTD}
    plain, pieces = io.BytesIO(), io.BytesIO()
    _session(Writer(plain, **kwargs))
    _session(open_writer(pieces, **kwargs))
    assert pieces.getvalue() == plain.getvalue()
    messages = list(make_reader(io.BytesIO(pieces.getvalue())).iter_messages())
    assert len(messages) == 240


def test_each_compressed_chunk_reaches_the_file_as_its_own_write() -> None:
    f = _SpyFile()
    _session(open_writer(f, chunk_size=1 << 62, compression=CompressionType.ZSTD))
    summary = make_reader(io.BytesIO(f.getvalue())).get_summary()
    assert summary is not None and len(summary.chunk_indexes) == 3
    for index in summary.chunk_indexes:
        assert index.compressed_size >= BY_REFERENCE_BYTES
        assert index.compressed_size in f.write_sizes  # not folded into a bigger copy


def test_a_length_patch_may_not_land_in_a_piece_kept_by_reference() -> None:
    buf = PieceBuffer()
    buf.write(b"head")
    buf.write(bytes(BY_REFERENCE_BYTES))
    buf.seek(1)
    buf.write(b"EA")  # inside the copied header: fine
    buf.seek(10)
    with pytest.raises(ValueError, match="copied piece"):
        buf.write(b"xx")
    assert b"".join(buf.take())[:4] == b"hEAd"


def test_data_section_crcs_are_refused_rather_than_miscomputed() -> None:
    with pytest.raises(ValueError, match="CRC"):
        open_writer(io.BytesIO(), enable_data_crcs=True)


# The internals of mcap 1.6 the two adaptations touch. A newer mcap that moves them must
# fail here, loudly, before a recording is written at the wrong level or through a copy.


def test_mcap_is_the_series_the_adaptations_were_written_for() -> None:
    assert version("mcap").startswith("1.6."), (
        f"mcap {version('mcap')}: edge/recording/mcap_io.py was written for 1.6; check "
        "mcap.writer's `zstandard` and `_Writer__record_builder`, then move the pin")


def test_chunks_go_through_the_levelled_compressor() -> None:
    assert isinstance(mcap_writer.zstandard, LevelledZstd)  # installed on import
    calls: list[int] = []

    class Spy(LevelledZstd):
        def compress(self, data: bytes) -> bytes:
            calls.append(len(data))
            return super().compress(data)

    installed = mcap_writer.zstandard
    mcap_writer.zstandard = Spy(ZSTD_LEVEL)  # type: ignore[assignment]
    try:
        _session(open_writer(io.BytesIO(), chunk_size=NO_AUTO_CHUNK,
                             compression=CompressionType.ZSTD))
    finally:
        mcap_writer.zstandard = installed
    assert len(calls) == 3, "mcap.writer no longer compresses chunks via `zstandard.compress`"


def test_the_writers_record_builder_is_where_the_piece_writer_replaces_it() -> None:
    w = Writer(io.BytesIO())
    assert isinstance(getattr(w, "_Writer__record_builder", None), RecordBuilder)
