"""The hub protocol as specified in docs/hub-protocol.md: framing, CRC, parser counters."""

from __future__ import annotations

import binascii
import struct

import numpy as np
import pytest

from sensors import hub_protocol as hp

FRAME_LEN = 43  # DATA frame with 5 channels
# Payload length limits per frame type, written out from docs/hub-protocol.md.
SPEC_LIMITS = {
    0x01: (2, 2), 0x02: (2, 2), 0x03: (2, 2), 0x04: (4, 4), 0x05: (2, 2),
    0x80: (35, 35), 0x81: (11, 11), 0x82: (4, 4), 0x83: (25, 1024),
}


def data_stream(n: int, seed: int = 0, first_seq: int = 0) -> tuple[bytes, np.ndarray]:
    rng = np.random.default_rng(seed)
    raw = rng.integers(-(2**31), 2**31 - 1, (n, 5), dtype=np.int32)
    seq = first_seq + np.arange(n)
    stream = hp.encode_data(seq, 1_000_000 + seq * 1000, rng.integers(0, 4, n),
                            rng.integers(0, 2, n), raw)
    return stream, raw


def feed_in_chunks(parser: hp.HubParser, stream: bytes, seed: int = 1) -> list[hp.ParsedBatch]:
    rng = np.random.default_rng(seed)
    out, i = [], 0
    while i < len(stream):
        n = int(rng.integers(1, 600))
        out.append(parser.feed(stream[i : i + n]))
        i += n
    return out


def concat(batches: list[hp.ParsedBatch]) -> tuple[np.ndarray, np.ndarray]:
    seq = np.concatenate([b.seq for b in batches])
    raw = np.concatenate([b.raw for b in batches])
    return seq, raw


def test_crc_is_ccitt_false_with_its_check_value():
    assert hp.crc16(b"123456789") == 0x29B1
    rng = np.random.default_rng(0)
    for length in (1, 2, 3, 39, 40, 1027):
        rows = rng.integers(0, 256, (20, length), dtype=np.uint8)
        got = hp.crc16_rows(rows)
        want = [binascii.crc_hqx(r.tobytes(), 0xFFFF) for r in rows]  # independent reference
        assert got.tolist() == want


def test_worked_example_in_the_document():
    frame = hp.encode_data(np.array([1000]), np.array([12_345_678]), np.array([0]),
                           np.array([1]), np.array([[12000, 53210, 7342, 512345, 334817]]))
    assert frame == bytes.fromhex(
        "a5 5a 01 80 23 00 e8 03 00 00 4e 61 bc 00 00 00 00 00 00 00 01 e0 2e 00 00"
        " da cf 00 00 ae 1c 00 00 59 d1 07 00 e1 1b 05 00 dd fb"
    )
    assert hp.encode_command(hp.SET_RATE, 7, 500) == bytes.fromhex("a55a0104040007 00f401832f")


def test_clean_stream_decodes_bit_exact_in_any_chunking():
    stream, raw = data_stream(3000)
    whole = hp.HubParser().feed(stream)
    parser = hp.HubParser()
    seq, got = concat(feed_in_chunks(parser, stream))
    assert np.array_equal(whole.raw, raw) and np.array_equal(got, raw)
    assert seq.tolist() == list(range(3000))
    c = parser.counters
    assert (c.crc_errors, c.resyncs, c.bytes_skipped, c.seq_gaps) == (0, 0, 0, 0)
    assert c.data_frames == 3000


def expected_outcome(frame: bytes) -> str:
    """What the spec says happens to a corrupted DATA frame, from its header alone."""
    if frame[:2] != hp.SYNC:
        return "skipped"
    version, ftype, plen = frame[2], frame[3], frame[4] | frame[5] << 8
    if version != 1 or ftype not in SPEC_LIMITS:
        return "skipped"
    lo, hi = SPEC_LIMITS[ftype]
    if plen > hi:
        return "oversize"
    if plen < lo:
        return "undersize"
    return "crc"


def test_random_corruption_is_rejected_and_counted_exactly():
    n = 20_000
    stream, raw = data_stream(n, seed=3)
    rng = np.random.default_rng(4)
    buf = np.frombuffer(stream, dtype=np.uint8).copy()
    hit = np.flatnonzero(rng.random(buf.size) < 1e-3)
    hit = hit[hit < (n - 5) * FRAME_LEN]  # the stream ends on clean frames
    buf[hit] ^= rng.integers(1, 256, hit.size, dtype=np.uint8)
    bad = np.zeros(n, dtype=bool)
    bad[hit // FRAME_LEN] = True
    outcome = [expected_outcome(buf[i * FRAME_LEN : (i + 1) * FRAME_LEN].tobytes())
               for i in np.flatnonzero(bad)]
    runs = int(np.count_nonzero(bad[1:] & ~bad[:-1]) + bad[0])

    parser = hp.HubParser()
    seq, got = concat(feed_in_chunks(parser, buf.tobytes(), seed=5))  # must not raise
    c = parser.counters
    assert bad.sum() > 500  # ~4 % of frames: the test exercises corruption
    assert seq.tolist() == np.flatnonzero(~bad).tolist()  # every clean frame, nothing else
    assert np.array_equal(got, raw[~bad])
    assert c.crc_errors == outcome.count("crc")
    assert c.oversize == outcome.count("oversize")
    assert c.undersize == outcome.count("undersize")
    assert c.bytes_skipped == int(bad.sum()) * FRAME_LEN
    assert c.resyncs == runs
    assert c.seq_gaps == runs and c.samples_lost == int(bad.sum())


def test_resync_after_garbage_and_a_truncated_frame():
    frames = [hp.encode_data(np.array([i]), np.array([i]), np.array([0]), np.array([0]),
                             np.full((1, 5), i)) for i in range(5)]
    garbage = bytes(np.random.default_rng(0).integers(0, 0xA5, 97, dtype=np.uint8))
    stream = frames[0] + garbage + frames[1] + frames[2][:20] + frames[3] + frames[4][:30]
    parser = hp.HubParser()
    seq, _ = concat([parser.feed(stream)])
    assert seq.tolist() == [0, 1, 3]
    c = parser.counters
    assert c.crc_errors == 1  # the truncated frame runs into frame 3 and fails its CRC
    assert c.bytes_skipped == 97 + 20
    assert c.resyncs == 2
    assert (c.seq_gaps, c.samples_lost) == (1, 1)
    rest = parser.feed(frames[4][30:])  # the partial tail was kept, not skipped
    assert rest.seq.tolist() == [4] and parser.counters.bytes_skipped == 117


def test_wrong_lengths_are_counted_and_the_next_frame_survives():
    good = hp.encode_data(np.array([0]), np.array([0]), np.array([0]), np.array([0]),
                          np.zeros((1, 5)))
    short_data = hp.encode_frame(hp.DATA, bytes(34))
    long_ack = hp.encode_frame(hp.ACK, bytes(40))
    huge = hp.SYNC + struct.pack("<BBH", 1, hp.INFO, 5000) + bytes(10)
    parser = hp.HubParser()
    batch = parser.feed(short_data + long_ack + huge + good)
    assert batch.seq.tolist() == [0]
    c = parser.counters
    assert (c.undersize, c.oversize, c.crc_errors) == (1, 2, 0)
    assert c.resyncs == 1 and c.bytes_skipped == len(short_data) + len(long_ack) + len(huge)


def test_sequence_gaps_and_wrap_past_32_bits():
    seqs = np.array([0, 1, 2, 5, 6, 10, 11])
    stream = hp.encode_data(seqs, seqs, np.zeros(7), np.zeros(7), np.zeros((7, 5)))
    parser = hp.HubParser()
    assert parser.feed(stream).seq.tolist() == seqs.tolist()
    assert (parser.counters.seq_gaps, parser.counters.samples_lost) == (2, 5)

    near = np.arange(2**32 - 3, 2**32 + 3)  # the u32 field wraps, the index must not
    parser = hp.HubParser()
    got = parser.feed(hp.encode_data(near, near, np.zeros(6), np.zeros(6), np.zeros((6, 5))))
    assert got.seq.tolist() == near.tolist() and parser.counters.seq_gaps == 0


def test_random_bytes_never_raise_and_are_all_accounted():
    rng = np.random.default_rng(9)
    noise = rng.integers(0, 256, 200_000, dtype=np.uint8)
    noise[rng.integers(0, noise.size - 1, 2000)] = 0xA5  # plenty of sync-like starts
    parser = hp.HubParser(n_channels=None)
    batches = feed_in_chunks(parser, noise.tobytes())
    c = parser.counters
    buffered = parser.buffered
    assert sum(len(b) for b in batches) == c.data_frames == 0
    assert c.bytes_skipped + buffered == noise.size


def test_commands_replies_and_info_round_trip():
    ident = hp.HubIdentity(channels=("ECG", "EDA"), units=("mV", "uS"), scale=(1e-4, 1e-5),
                           offset=(0.0, -1.5), fs_hz=500, boot_id=1234, streaming=True)
    stream = (hp.encode_info(9, ident) + hp.encode_ack(3, hp.START, 77)
              + hp.encode_nak(4, hp.SET_RATE, hp.NAK_BAD_ARG) + hp.encode_command(hp.PING, 5))
    msgs = hp.HubParser().feed(stream).messages
    assert [m.ftype for m in msgs] == [hp.INFO, hp.ACK, hp.NAK, hp.PING]
    assert hp.decode_info(msgs[0].payload) == (9, ident)
    assert struct.unpack("<HBQ", msgs[1].payload) == (3, hp.START, 77)
    assert tuple(msgs[2].payload) == (4, 0, hp.SET_RATE, hp.NAK_BAD_ARG)


def test_info_of_another_protocol_version_is_delivered_and_flagged():
    ident = hp.HubIdentity(channels=("ECG",), units=("mV",), scale=(1.0,), offset=(0.0,))
    parser = hp.HubParser()
    msgs = parser.feed(hp.encode_info(1, ident, version=2)).messages
    assert [m.version for m in msgs] == [2] and parser.counters.foreign_version == 1


@pytest.mark.bench
def test_parser_throughput_bench():
    for chunk in (430, 4096, 65536):
        fps = hp.measure_throughput(n_frames=100_000, chunk=chunk)
        print(f"\nparser, {chunk} B per feed: {fps:,.0f} frames/s")
        assert fps > 2000  # 1 kHz with headroom even at 10 frames per feed
