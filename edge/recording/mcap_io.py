"""The two adaptations of mcap's Writer (mcap 1.6; tests/test_mcap_io.py fails if they break).

1. Chunks compressed at ``ZSTD_LEVEL`` instead of zstd's default: the writer module's
   ``zstandard`` name is replaced (:func:`install_levelled_zstd`, done on import).
2. Each compressed chunk written to the file without a GIL-held copy (below).

mcap's Writer assembles every record in an in-memory ``BytesIO`` before writing it to
the file. For a chunk that means one ``BytesIO.write`` of the whole compressed chunk
(about 8 MB for half a second of 200 fps frames) into freshly allocated memory: a single
memcpy that held the GIL for 4-26 ms on the bench VM, while every other thread (the
camera's reader among them) waited. Here big writes are kept by reference and handed to the file one
by one; file writes release the GIL. The file's bytes are exactly what mcap would write.

Only the Writer's own record builder is replaced (``_Writer__record_builder``, mcap
1.6): its summary builder and the chunk builder are untouched.
"""

from __future__ import annotations

import threading
from typing import IO, Any

import mcap.writer as mcap_writer
import zstandard
from mcap.data_stream import RecordBuilder
from mcap.writer import Writer

BY_REFERENCE_BYTES = 64 * 1024  # writes at least this big are not copied
NO_AUTO_CHUNK = 1 << 62  # chunk_size for a writer whose chunks close only when told to

# mcap's Writer compresses each chunk with ``zstandard.compress`` at zstd's default level 3.
# Camera frames barely compress (sensor noise): level 3 spends ~4x the CPU of level 1 for
# ~6% smaller chunks (sim frames: 145 vs 617 MB/s, ratio 1.16 vs 1.09). On a Pi that CPU is
# the spotter's. So the writer module gets a compressor at ZSTD_LEVEL instead.
ZSTD_LEVEL = 1


class LevelledZstd:
    """The one function mcap.writer uses of the zstandard module, at a chosen level."""

    def __init__(self, level: int) -> None:
        self.level = level
        self._local = threading.local()  # a ZstdCompressor is not safe across threads

    def compress(self, data: bytes) -> bytes:
        c = getattr(self._local, "compressor", None)
        if c is None:
            c = self._local.compressor = zstandard.ZstdCompressor(level=self.level)
        return c.compress(data)


def install_levelled_zstd(level: int = ZSTD_LEVEL) -> None:
    """Make mcap's writer module compress chunks at ``level`` (process-wide)."""
    if not hasattr(mcap_writer.zstandard, "compress"):
        raise RuntimeError("mcap.writer no longer compresses through a module-level "
                           "`zstandard`: update edge/recording/mcap_io.py")
    mcap_writer.zstandard = LevelledZstd(level)  # type: ignore[assignment]


install_levelled_zstd()


class Pieces(list):
    """The bytes of a batch of records, in order; :class:`PieceStream` writes them."""


class PieceBuffer:
    """The part of ``BytesIO`` that ``RecordBuilder`` uses, keeping big writes by reference.

    ``RecordBuilder`` seeks back only to patch a record's 8-byte length, which it wrote
    into a small header just before: such an overwrite must land in a copied piece.
    """

    def __init__(self) -> None:
        self._pieces: list[bytes | bytearray] = []
        self._starts: list[int] = []
        self._size = 0
        self._pos = 0

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int) -> int:
        if not 0 <= pos <= self._size:
            raise ValueError(f"seek to {pos} outside 0..{self._size}")
        self._pos = pos
        return pos

    def write(self, data: Any) -> int:
        n = len(data)
        if self._pos != self._size:
            self._overwrite(bytes(data))
            return n
        if type(data) is bytes and n >= BY_REFERENCE_BYTES:
            self._append(data)  # immutable: safe to keep
        elif self._pieces and isinstance(self._pieces[-1], bytearray):
            self._pieces[-1] += data
            self._size += n
        else:
            self._append(bytearray(data))
        self._pos = self._size
        return n

    def _append(self, piece: bytes | bytearray) -> None:
        self._starts.append(self._size)
        self._pieces.append(piece)
        self._size += len(piece)

    def _overwrite(self, data: bytes) -> None:
        for start, piece in zip(reversed(self._starts), reversed(self._pieces), strict=True):
            if start <= self._pos:
                off = self._pos - start
                if not isinstance(piece, bytearray) or off + len(data) > len(piece):
                    raise ValueError("overwrite outside a copied piece")
                piece[off:off + len(data)] = data
                self._pos += len(data)
                return
        raise ValueError(f"overwrite at {self._pos} before any piece")

    def take(self) -> Pieces:
        """Everything written so far; the buffer starts empty again."""
        out = Pieces(self._pieces)
        self._pieces, self._starts, self._size, self._pos = [], [], 0, 0
        return out


class _PieceRecordBuilder(RecordBuilder):
    def __init__(self) -> None:
        self._buffer = PieceBuffer()  # type: ignore[assignment]

    def end(self) -> Pieces:  # type: ignore[override]
        return self._buffer.take()  # type: ignore[attr-defined]


class PieceStream:
    """The file as mcap's Writer sees it: writes :class:`Pieces` one piece at a time."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f

    def write(self, data: Any) -> int:
        if isinstance(data, Pieces):
            return sum(self._f.write(p) for p in data)
        return self._f.write(data)

    def tell(self) -> int:
        return self._f.tell()

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def open_writer(f: IO[bytes], **kwargs: Any) -> Writer:
    """An mcap ``Writer`` on ``f`` whose chunk records reach ``f`` without a big copy."""
    if kwargs.get("enable_data_crcs"):
        raise ValueError("data-section CRCs need contiguous records: not supported here")
    w = Writer(PieceStream(f), **kwargs)  # type: ignore[arg-type]
    if not isinstance(getattr(w, "_Writer__record_builder", None), RecordBuilder):
        raise RuntimeError("mcap Writer internals changed: update edge/recording/mcap_io.py")
    w._Writer__record_builder = _PieceRecordBuilder()  # type: ignore[attr-defined]
    return w
