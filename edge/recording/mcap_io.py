"""mcap's Writer, with each compressed chunk written to the file without a GIL-held copy.

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

from typing import IO, Any

from mcap.data_stream import RecordBuilder
from mcap.writer import Writer

BY_REFERENCE_BYTES = 64 * 1024  # writes at least this big are not copied


class Pieces(list):
    """The bytes of a batch of records, in order; :class:`PieceStream` writes them."""


class _PieceBuffer:
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
        self._buffer = _PieceBuffer()  # type: ignore[assignment]

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
