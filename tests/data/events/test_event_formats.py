"""Event file readers: hand-decoded bytes, documented counts, and errors naming file and byte offset."""

from __future__ import annotations

import shutil
import struct
import sys

import numpy as np
import pytest
from event_files import (
    DAVIS240_CHIP,
    DAVIS346_CHIP,
    aedat3_packet,
    aedat3_word,
    davis_address,
    dvs128_address,
    evt2_cd,
    evt3,
    evt3_words,
    shared_file,
    structured,
    write_aedat2,
    write_aedat3,
    write_aedat4,
    write_atis,
    write_prophesee_dat,
    write_raw,
    write_stmnist,
)

from spikeforge.data import DatasetCorruptError
from spikeforge.data.events import (
    EVENT_DTYPE,
    EventFileError,
    read_aedat2,
    read_aedat3,
    read_aedat4,
    read_aedat4_header,
    read_atis_bin,
    read_events,
    read_gesture_labels,
    read_prophesee,
    read_prophesee_header,
    read_stmnist,
)
from spikeforge.optional import MissingDependency

pytestmark = pytest.mark.filterwarnings("ignore:AEDAT 4 recording with:UserWarning")


def assert_events(actual: np.ndarray, expected_records) -> None:
    assert actual.dtype == EVENT_DTYPE
    np.testing.assert_array_equal(actual.astype(structured([]).dtype), structured(expected_records))


def offset_error(call, path, offset: int, words: str = ""):
    """``call()`` raises EventFileError naming ``path`` and ``offset`` (and ``words``), on one line."""
    with pytest.raises(EventFileError) as info:
        call()
    message = str(info.value)
    assert str(path) in message and f"byte offset {offset}" in message and "\n" not in message, message
    assert words in message and info.value.offset == offset
    assert isinstance(info.value, DatasetCorruptError)
    return message


# ----------------------------------------------------------------------------- AEDAT 2.0 (DVS128)


def test_aedat2_decodes_dvs128_addresses_and_flips_x(tmp_path):
    records = [(dvs128_address(0, 5, 1), 10), (dvs128_address(127, 0, 0), 11),
               (dvs128_address(3, 2, 1, external=True), 12), (dvs128_address(64, 127, 0), -5)]
    path = write_aedat2(tmp_path / "a.aedat", records)
    # x is flipped to 127 - x; the external event (bit 15) is dropped
    assert_events(read_aedat2(path), [(127, 5, 10, 1), (0, 0, 11, 0), (63, 127, -5, 0)])
    assert_events(read_aedat2(path, flip_x=False), [(0, 5, 10, 1), (127, 0, 11, 0), (64, 127, -5, 0)])
    # hand-decoded raw record: address 0x0000_0a07 = y 10, x 3, ON; t 0x0102_0304
    raw = tmp_path / "raw.aedat"
    raw.write_bytes(b"#!AER-DAT2.0\r\n" + bytes.fromhex("00000a07" "01020304"))
    assert_events(read_aedat2(raw, flip_x=False), [(3, 10, 0x01020304, 1)])
    assert len(read_events(path)) == 3


def test_aedat2_errors_name_file_and_offset(tmp_path):
    path = write_aedat2(tmp_path / "cut.aedat", [(dvs128_address(1, 1, 1), t) for t in range(4)])
    data = path.read_bytes()
    header = len(data) - 32
    path.write_bytes(data[:-3])  # the last record is 5 of 8 bytes
    offset_error(lambda: read_aedat2(path), path, header + 24, "ends inside an event record")
    cochlea = write_aedat2(tmp_path / "cochlea.aedat", [], chip="ch.unizh.ini.jaer.chip.cochlea.CochleaAMS1c")
    offset_error(lambda: read_aedat2(cochlea), cochlea, 0, "only the DVS128, DAVIS240 and DAVIS346")
    v1 = write_aedat2(tmp_path / "v1.aedat", [], version="1.0")
    offset_error(lambda: read_aedat2(v1), v1, 0, "expected an AEDAT 2.0 file")
    junk = tmp_path / "junk.aedat"
    junk.write_bytes(b"\x00" * 16)
    offset_error(lambda: read_aedat2(junk), junk, 0, "not an AEDAT file")
    unterminated = tmp_path / "open.aedat"
    unterminated.write_bytes(b"#!AER-DAT2.0\r\n# no line end")
    offset_error(lambda: read_aedat2(unterminated), unterminated, 14, "header line without a line end")


def test_real_jaer_header_is_parsed_and_its_davis346_chip_recognised(tmp_path):
    sample = shared_file("event-samples/sample_aedat_header.aedat")  # header only: AEChip Davis346red
    assert len(read_aedat2(sample)) == 0
    copy = tmp_path / sample.name
    shutil.copyfile(sample, copy)
    with open(copy, "ab") as f:  # one DVS event at raw column 5, raw row 7, ON
        f.write(struct.pack(">Ii", davis_address(5, 7, 1), 42))
    assert_events(read_events(copy), [(345 - 5, 259 - 7, 42, 1)])


def test_aedat2_davis_layouts_keep_dvs_events_only_and_turn_both_axes(tmp_path):
    records = [(davis_address(0, 0, 1), 1), (davis_address(345, 259, 0), 2),
               (davis_address(3, 4, 1, special=True), 3),                       # external input: dropped
               (davis_address(10, 20, 0, aps=True), 4),                         # APS sample: dropped
               (davis_address(0, 0, 1, special=True, aps=True), 5),             # IMU sample: dropped
               (davis_address(100, 200, 1), -6)]
    path = write_aedat2(tmp_path / "d346.aedat", records, chip=DAVIS346_CHIP)
    assert_events(read_aedat2(path), [(345, 259, 1, 1), (0, 0, 2, 0), (245, 59, -6, 1)])
    assert_events(read_aedat2(path, flip_x=False, flip_y=False), [(0, 0, 1, 1), (345, 259, 2, 0), (100, 200, -6, 1)])
    # hand-decoded raw record: 0x0501_5800 = y 0x14 (bits 22-30), x 0x15 (bits 12-21), polarity 1 (bit 11)
    raw = tmp_path / "raw.aedat"
    raw.write_bytes(f"#!AER-DAT2.0\r\n# AEChip: {DAVIS240_CHIP}\r\n".encode() + bytes.fromhex("05015800" "00000007"))
    assert_events(read_aedat2(raw), [(239 - 0x15, 179 - 0x14, 7, 1)])
    assert_events(read_aedat2(raw, layout="davis346", flip_x=False, flip_y=False), [(0x15, 0x14, 7, 1)])
    # a DAVIS file without an AEChip line decodes as DVS128 unless the layout is given
    bare = write_aedat2(tmp_path / "bare.aedat", [(davis_address(2, 3, 1), 9)], chip=None)
    assert_events(read_aedat2(bare, layout="davis240"), [(237, 176, 9, 1)])
    with pytest.raises(ValueError, match="layout="):
        read_aedat2(bare, layout="davis640")


def test_aedat2_davis_errors_name_file_and_offset(tmp_path):
    path = write_aedat2(tmp_path / "d240.aedat", [(davis_address(1, 1, 1), 0), (davis_address(240, 0, 0), 1)],
                        chip=DAVIS240_CHIP)
    header = len(path.read_bytes()) - 16
    offset_error(lambda: read_aedat2(path), path, header + 8, "x=240, y=0 outside the 240x180 array")
    cut = write_aedat2(tmp_path / "cut.aedat", [(davis_address(1, 1, 1), t) for t in range(3)], chip=DAVIS240_CHIP)
    cut.write_bytes(cut.read_bytes()[:-1])
    offset_error(lambda: read_aedat2(cut), cut, header + 16, "ends inside an event record")


# ----------------------------------------------------------------------------- AEDAT 3.1 (DVS128 Gesture)


def test_aedat3_decodes_polarity_packets_and_skips_the_rest(tmp_path):
    first = aedat3_packet([(aedat3_word(10, 20, 1), 100), (aedat3_word(5, 6, 0, valid=False), 101),
                           (aedat3_word(127, 0, 0), 102)])
    special = aedat3_packet([(0xDEAD, 103)], event_type=0)
    late = aedat3_packet([(aedat3_word(1, 127, 1), 7)], overflow=3)
    path = write_aedat3(tmp_path / "user01_led.aedat", [first, special, late])
    assert_events(read_aedat3(path), [(10, 20, 100, 1), (127, 0, 102, 0), (1, 127, 3 * 2**31 + 7, 1)])
    assert len(read_events(path)) == 3


def test_aedat3_errors_name_file_and_packet_offset(tmp_path):
    packets = [aedat3_packet([(aedat3_word(1, 1, 1), t)]) for t in range(3)]
    path = write_aedat3(tmp_path / "cut.aedat", packets)
    data = path.read_bytes()
    header = len(data) - 3 * 36
    path.write_bytes(data[:-4])
    offset_error(lambda: read_aedat3(path), path, header + 72, "runs past the end of the file")
    path.write_bytes(data[: header + 36 + 10])
    offset_error(lambda: read_aedat3(path), path, header + 36, "inside a packet header")
    wide = write_aedat3(tmp_path / "wide.aedat", [aedat3_packet([(1, 2)], event_size=12)[:-8] + b"\x00" * 12])
    offset_error(lambda: read_aedat3(wide), wide, header, "eventSize 12")
    v2 = write_aedat2(tmp_path / "v2.aedat", [])
    offset_error(lambda: read_aedat3(v2), v2, 0, "expected an AEDAT 3.1 file")


def test_gesture_label_csv(tmp_path):
    path = tmp_path / "user01_led_labels.csv"
    path.write_bytes(b"class,startTime_usec,endTime_usec\r\n1,100,200\r\n11,300,450\r\n\r\n")
    np.testing.assert_array_equal(read_gesture_labels(path), [[1, 100, 200], [11, 300, 450]])
    path.write_bytes(b"class,startTime_usec,endTime_usec\r\n1,100,200\r\n12,300,450\r\n")
    offset_error(lambda: read_gesture_labels(path), path, 46, "class 12")
    path.write_bytes(b"class,startTime_usec,endTime_usec\n1,100\n")
    offset_error(lambda: read_gesture_labels(path), path, 34, "line 2")


# ----------------------------------------------------------------------------- N-MNIST / N-Caltech101 .bin


def test_atis_bin_decodes_records_and_overflow_markers(tmp_path):
    path = write_atis(tmp_path / "a.bin", [(3, 4, 1, 0x7FFFFF), (33, 0, 0, 5), (0, 240, 0, 0), (1, 2, 1, 6)])
    # the y == 240 record is an overflow marker: dropped, later timestamps + 2**13
    assert_events(read_atis_bin(path), [(3, 4, 0x7FFFFF, 1), (33, 0, 5, 0), (1, 2, 6 + 8192, 1)])
    raw = tmp_path / "raw.bs2"
    raw.write_bytes(bytes.fromhex("1210 80037d"))  # first record of nmnist-small/1.bs2
    assert_events(read_events(raw), [(18, 16, 0x037D, 1)])
    cut = tmp_path / "cut.bin"
    cut.write_bytes(path.read_bytes()[:-2])
    offset_error(lambda: read_atis_bin(cut), cut, 15, "ends inside an event record")


def test_real_nmnist_and_ncaltech_recordings_have_their_documented_counts():
    nmnist = read_atis_bin(shared_file("event-samples/sample_nmnist.bin"))
    caltech = read_atis_bin(shared_file("event-samples/ncaltech101_faces_easy_0001.bin"))
    assert (len(nmnist), len(caltech)) == (4325, 67445)
    assert nmnist["x"].max() < 34 and nmnist["y"].max() < 34
    for events in (nmnist, caltech):
        assert np.all(np.diff(events["t"]) >= 0) and 0.25e6 < events["t"][-1] < 0.35e6  # ~300 ms
        assert set(np.unique(events["p"])) == {0, 1}


def test_all_nmnist_small_recordings_read_inside_the_34x34_sensor():
    folder = shared_file("nmnist-small")
    files = sorted(folder.glob("*.bs2"))
    assert len(files) == 1100
    for path in files:
        events = read_atis_bin(path)
        assert len(events) == path.stat().st_size // 5 > 0
        assert events["x"].max() < 34 and events["y"].max() < 34, path


# ----------------------------------------------------------------------------- AEDAT 4.0


def test_aedat4_uncompressed_file_written_from_the_layout(tmp_path):
    path = write_aedat4(tmp_path / "a.aedat4", [(0, [(1000, 3, 4, True), (1001, 31, 23, False)]),
                                                (2, [(1002, 9, 9, True)]), (0, [(1003, 0, 0, True)])],
                        streams={0: ("EVTS", (32, 24)), 2: ("EVTS", (32, 24)), 5: ("IMUS", None)})
    header = read_aedat4_header(path)
    assert header.compression == "none" and header.data_table_position == -1
    assert header.streams[0].size == (24, 32) and header.streams[5].type == "IMUS"
    assert_events(read_aedat4(path, stream=0), [(3, 4, 1000, 1), (31, 23, 1001, 0), (0, 0, 1003, 1)])
    assert_events(read_aedat4(path, stream=2), [(9, 9, 1002, 1)])
    with pytest.raises(ValueError, match="pass stream="):
        read_aedat4(path)
    with pytest.raises(ValueError, match="not an event stream"):
        read_aedat4(path, stream=5)
    single = write_aedat4(tmp_path / "b.aedat4", [(0, [(7, 1, 2, True)])])
    assert_events(read_events(single), [(1, 2, 7, 1)])


@pytest.mark.parametrize("codec, code, name", [("lz4.frame", 1, "lz4"), ("zstandard", 3, "zstd")])
def test_aedat4_compressed_packets(tmp_path, codec, code, name):
    module = pytest.importorskip(codec)
    compress = module.compress if codec == "lz4.frame" else module.ZstdCompressor().compress
    packets = [(0, [(t, t % 32, t % 24, t % 2 == 0) for t in range(100 * i, 100 * i + 100)]) for i in range(3)]
    path = write_aedat4(tmp_path / "c.aedat4", packets, compression=code, compress=compress)
    assert read_aedat4_header(path).compression == name
    events = read_aedat4(path)
    assert len(events) == 300 and events["t"].tolist() == list(range(300))
    assert events["x"].tolist() == [t % 32 for t in range(300)] and events["p"].tolist() == [1, 0] * 150


def test_aedat4_errors_name_file_and_packet_offset(tmp_path):
    path = write_aedat4(tmp_path / "a.aedat4", [(0, [(t, 1, 1, True) for t in range(3)]), (0, [(9, 2, 2, False)])])
    data = path.read_bytes()
    second = len(data) - (8 + 4 + 28 + 16)
    path.write_bytes(data[:-5])
    offset_error(lambda: read_aedat4(path), path, second, "runs past the end of the file")
    bad = bytearray(data)
    bad[second + 8 + 4 + 4 : second + 8 + 4 + 8] = b"XXXX"  # the packet's flatbuffer identifier
    path.write_bytes(bytes(bad))
    offset_error(lambda: read_aedat4(path), path, second, "malformed event packet")
    path.write_bytes(data[:40])
    offset_error(lambda: read_aedat4(path), path, 14, "does not fit in the file")


def test_real_davis346_aedat4_matches_hand_decoded_first_packet_and_documented_count(tmp_path):
    lz4_frame = pytest.importorskip("lz4.frame")
    path = shared_file("event-samples/davis346_346x260.aedat4")
    events = read_aedat4(path)
    assert len(events) == 6676  # shared/data/README.md
    header = read_aedat4_header(path)
    assert header.compression == "lz4" and header.streams[0].size == (260, 346)
    assert [s.type for s in header.streams.values()] == ["EVTS", "FRME", "IMUS", "TRIG"]
    assert events["x"].max() < 346 and events["y"].max() < 260 and np.all(np.diff(events["t"]) >= 0)
    assert 0.16e6 < events["t"][-1] - events["t"][0] < 0.18e6  # 0.17 s
    # Hand decoding: header size at byte 14; the first packet (stream 0) follows the header;
    # its LZ4 frame holds a size-prefixed flatbuffer whose event vector length sits at byte 28
    # and whose 16-byte {int64 t, int16 x, int16 y, bool on} structs start at byte 32.
    data = path.read_bytes()
    first = 18 + struct.unpack_from("<i", data, 14)[0]
    stream, size = struct.unpack_from("<ii", data, first)
    assert stream == 0
    packet = lz4_frame.decompress(data[first + 8 : first + 8 + size])
    count = struct.unpack_from("<I", packet, 28)[0]
    decoded = [struct.unpack_from("<qhh?", packet, 32 + 16 * i) for i in range(count)]
    assert decoded[0] == (1589163147368868, 215, 164, True)
    assert_events(events[:count], [(x, y, t, int(on)) for t, x, y, on in decoded])
    # a truncated copy names the packet where the file ends
    cut = tmp_path / "cut.aedat4"
    cut.write_bytes(data[: first + 100])
    offset_error(lambda: read_aedat4(cut), cut, first, "runs past the end of the file")
    flipped = bytearray(data)
    flipped[first + 8 + 20] ^= 0xFF  # inside the LZ4 block of the first packet
    cut.write_bytes(bytes(flipped))
    with pytest.raises(EventFileError, match=f"byte offset {first}"):
        read_aedat4(cut)


def test_real_dvxplorer_aedat4_has_about_112k_events_over_0_59_s():
    pytest.importorskip("lz4.frame")
    path = shared_file("event-samples/dvxplorer_320x240.aedat4")
    events = read_events(path)
    assert 111_000 < len(events) < 113_000  # "about 112k", shared/data/README.md
    assert read_aedat4_header(path).streams[0].size == (240, 320)
    assert events["x"].max() < 320 and events["y"].max() < 240 and np.all(np.diff(events["t"]) >= 0)
    assert 0.58e6 < events["t"][-1] - events["t"][0] < 0.60e6


def test_aedat4_falls_back_to_its_own_parser_without_the_aedat_package(monkeypatch):
    pytest.importorskip("lz4.frame")
    path = shared_file("event-samples/davis346_346x260.aedat4")
    monkeypatch.setitem(sys.modules, "aedat", None)  # `import aedat` now fails
    events = read_aedat4(path)
    assert len(events) == 6676 and np.array_equal(events, read_aedat4(path, decoder="spikeforge"))
    with pytest.raises(MissingDependency, match=r"""needs the 'aedat' package: pip install "spikeforge\[events\]"$"""):
        read_aedat4(path, decoder="aedat")
    with pytest.raises(ValueError, match="decoder="):
        read_aedat4(path, decoder="dv")


def test_aedat4_notes_the_streams_it_skips_in_one_line():
    path = shared_file("event-samples/davis346_346x260.aedat4")
    with pytest.warns(UserWarning) as notes:
        read_aedat4(path)
    assert [str(n.message) for n in notes] == ["AEDAT 4 recording with IMU, frames, triggers streams: read_aedat4 "
                                               "returns only the polarity events of stream 0"]


def test_aedat4_through_aedat_names_the_file_when_the_package_fails(tmp_path):
    pytest.importorskip("aedat")
    data = shared_file("event-samples/davis346_346x260.aedat4").read_bytes()
    cut = tmp_path / "cut.aedat4"
    cut.write_bytes(data[: len(data) // 2])
    offset_error(lambda: read_aedat4(cut, decoder="aedat"), cut, 0, "the aedat package cannot decode it")
    with pytest.raises(EventFileError, match="runs past the end of the file"):
        read_aedat4(cut)  # auto: the parser names the packet


# ----------------------------------------------------------------------------- Prophesee .dat


def test_prophesee_dat_hand_decoded_and_header_parsed(tmp_path):
    raw = tmp_path / "raw.dat"
    header = b"% Data file containing CD events\n% Version 2\n% Width 304\n% Height 240\n"
    # type 12 (EventCD), size 8; t = 16; word 0x1002_0019 = x 25 (bits 0-13), y 8 (bits 14-27), p 1 (bits 28-31)
    raw.write_bytes(header + bytes.fromhex("0c08" "10000000" "19000210"))
    assert_events(read_prophesee(raw), [(25, 8, 16, 1)])
    info = read_prophesee_header(raw)
    assert (info.encoding, info.size, info.data_start, info.fields["Version"]) == ("dat", (240, 304), len(header) + 2,
                                                                                   "2")
    path = write_prophesee_dat(tmp_path / "a.dat", [(0, 0, 0, 0), (5, 16383, 16383, 1), (2**32 - 1, 1, 2, 0),
                                                    (3, 4, 5, 1)], event_type=0)
    # the 32-bit timestamp wraps after 2**32 - 1
    assert_events(read_events(path), [(0, 0, 0, 0), (16383, 16383, 5, 1), (1, 2, 2**32 - 1, 0), (4, 5, 2**32 + 3, 1)])


def test_prophesee_dat_errors_name_file_and_offset(tmp_path):
    path = write_prophesee_dat(tmp_path / "cut.dat", [(t, 1, 1, 1) for t in range(3)])
    data = path.read_bytes()
    start = len(data) - 24  # first record, after the type and size bytes
    path.write_bytes(data[:-3])
    offset_error(lambda: read_prophesee(path), path, start + 16, "ends inside an event record (5 of 8 bytes)")
    bad = write_prophesee_dat(tmp_path / "bad.dat", [(0, 1, 1, 1), (1, 1, 1, 1 | 2)])
    offset_error(lambda: read_prophesee(bad), bad, start + 8, "polarity field 3")
    trigger = write_prophesee_dat(tmp_path / "trigger.dat", [], event_type=14)
    offset_error(lambda: read_prophesee(trigger), trigger, start - 2, "event type 14 of 8 bytes")
    wide = write_prophesee_dat(tmp_path / "wide.dat", [], event_size=16)
    offset_error(lambda: read_prophesee(wide), wide, start - 2, "event type 12 of 16 bytes")
    v1 = write_prophesee_dat(tmp_path / "v1.dat", [], version="1")
    offset_error(lambda: read_prophesee(v1), v1, 0, "DAT Version 1")
    short = tmp_path / "short.dat"
    short.write_bytes(b"% Version 2\n\x0c")
    offset_error(lambda: read_prophesee(short), short, 12, "before the event type and size bytes")
    open_line = tmp_path / "open.dat"
    open_line.write_bytes(b"% Version 2\n% Width")
    offset_error(lambda: read_prophesee(open_line), open_line, 12, "header line without a line end")
    junk = tmp_path / "junk.dat"
    junk.write_bytes(b"\x00" * 16)
    offset_error(lambda: read_prophesee(junk), junk, 0, "not a Prophesee file")


def test_real_ncars_dat_matches_its_hand_decoded_first_record():
    path = shared_file("event-samples/sample_ncars.dat")
    info = read_prophesee_header(path)
    assert info.encoding == "dat" and info.fields["Version"] == "2" and info.size is None  # no Width/Height lines
    events = read_events(path)
    t, word = struct.unpack_from("<II", path.read_bytes(), info.data_start)
    assert (t, word) == (0, 0x00020019)
    assert_events(events[:1], [(25, 8, 0, 0)])
    assert len(events) == (path.stat().st_size - info.data_start) // 8 == 2009
    assert np.all(np.diff(events["t"]) >= 0) and events["t"][-1] < 100_000  # N-CARS samples are 100 ms
    assert events["x"].max() < 120 and events["y"].max() < 100  # N-CARS crops are at most 120x100


# ----------------------------------------------------------------------------- Prophesee EVT 2.0 / EVT 3.0 .raw


def test_evt2_words_hand_decoded(tmp_path):
    words = [evt2_cd(3, 7, 8, 1),                  # before any time high: t = 3
             0x8000_0002,                          # EVT_TIME_HIGH 2: t = 2 << 6 | low
             evt2_cd(5, 100, 50, 1), 0xA000_0101,  # EXT_TRIGGER: skipped
             evt2_cd(63, 2047, 2047, 0), 0xE000_0000, 0xF000_1234,  # OTHERS, CONTINUED: skipped
             0x8FFF_FFFF, evt2_cd(1, 0, 0, 1),     # highest time high
             0x8000_0000, evt2_cd(0, 1, 1, 0)]     # the 28-bit time high wrapped: + 2**34
    path = write_raw(tmp_path / "a.raw", words, "2.0", "<I")
    assert_events(read_events(path), [(7, 8, 3, 1), (100, 50, 133, 1), (2047, 2047, 191, 0),
                                      (0, 0, (2**28 - 1) * 64 + 1, 1), (1, 1, 2**34, 0)])
    raw = write_raw(tmp_path / "raw.raw", [], "2.0", "<I")
    raw.write_bytes(raw.read_bytes() + bytes.fromhex("02000080" "32204311"))  # time high 2; CD_ON t 5, x 100, y 50
    assert_events(read_prophesee(raw), [(100, 50, 133, 1)])
    assert read_prophesee_header(raw).size == (720, 1280)


def test_evt3_words_hand_decoded(tmp_path):
    words = [evt3(2, 1),                                     # before any y or time: (1, 0, t 0, OFF)
             evt3(8, 1), evt3(6, 5), evt3(0, 7),             # t = 1 << 12 | 5 = 4101, y = 7
             evt3(2, 1 << 11 | 20),                          # single ON event at x 20
             evt3(3, 100),                                   # vector base x 100, OFF
             evt3(4, 0b1000_0000_0101),                      # VECT_12: x 100, 102, 111; base -> 112
             evt3(5, 0b1000_0001),                           # VECT_8: x 112, 119; base -> 120
             evt3(10, 0x101), evt3(14, 0), evt3(15, 0xABC), evt3(7, 3),  # trigger, others, continued: skipped
             evt3(5, 0xF01),                                 # VECT_8 reads bits 7-0 only: x 120
             evt3(0, 1 << 11 | 9),                           # y 9 (bit 11 is the system type)
             evt3(8, 0xFFF), evt3(6, 0xFFF), evt3(2, 3),     # t = 2**24 - 1
             evt3(8, 0), evt3(6, 2), evt3(2, 1 << 11 | 4)]   # the 24-bit time wrapped: t = 2**24 + 2
    path = write_raw(tmp_path / "a.raw", words, "3.0", "<H")
    vector = [(x, 7, 4101, 0) for x in (100, 102, 111, 112, 119, 120)]
    assert_events(read_events(path), [(1, 0, 0, 0), (20, 7, 4101, 1), *vector, (3, 9, 2**24 - 1, 0),
                                      (4, 9, 2**24 + 2, 1)])
    # '% end' closes the header even when the first word's low byte is '%' (0x25)
    percent = write_raw(tmp_path / "p.raw", [evt3(6, 0x025), evt3(2, 1)], "3.0", "<H")
    assert percent.read_bytes().endswith(b"% end\n" + bytes.fromhex("2560" "0120"))
    assert_events(read_prophesee(percent), [(1, 0, 0x25, 0)])
    assert read_prophesee_header(percent).data_start == len(percent.read_bytes()) - 4


def test_evt3_over_time_high_changes_and_wraps_matches_the_written_events(tmp_path):
    rng = np.random.default_rng(5)
    t = np.sort(rng.integers(0, 40_000_000, 20_000))  # 40 s: two wraps of the 24-bit time
    x, y, p = rng.integers(0, 1280, t.size), rng.integers(0, 720, t.size), rng.integers(0, 2, t.size)
    path = write_raw(tmp_path / "a.raw", evt3_words(zip(t.tolist(), x.tolist(), y.tolist(), p.tolist())), "3.0", "<H")
    events = read_prophesee(path)
    assert [events[k].tolist() for k in "xytp"] == [x.tolist(), y.tolist(), t.tolist(), p.tolist()]


def test_raw_headers_name_the_encoding(tmp_path):
    words = [evt3(8, 0), evt3(6, 9), evt3(0, 3), evt3(2, 4)]
    geometry = write_raw(tmp_path / "g.raw", words, "3.0", "<H", header="% evt 3.0\n% geometry 640x480\n")
    assert read_prophesee_header(geometry).size == (480, 640)
    assert_events(read_prophesee(geometry), [(4, 3, 9, 0)])
    formatted = write_raw(tmp_path / "f.raw", words, "3.0", "<H", header="% format EVT3;height=320;width=320\n% end\n")
    assert read_prophesee_header(formatted).encoding == "evt3"
    bare = write_raw(tmp_path / "bare.raw", words, "3.0", "<H", header="% camera_integrator_name Prophesee\n")
    offset_error(lambda: read_prophesee(bare), bare, 0, "pass encoding=")
    assert_events(read_prophesee(bare, encoding="evt3"), [(4, 3, 9, 0)])
    with pytest.raises(ValueError, match="encoding="):
        read_prophesee(bare, encoding="evt4")
    evt21 = write_raw(tmp_path / "21.raw", [], "2.1", "<Q", header="% format EVT21;height=720;width=1280\n% end\n")
    offset_error(lambda: read_prophesee(evt21), evt21, 0, "encoding 'EVT21'")


def test_raw_errors_name_file_and_offset(tmp_path):
    for evt, fmt, reserved, size in (("2.0", "<I", 0x3000_0000, 4), ("3.0", "<H", evt3(1, 0), 2)):
        path = write_raw(tmp_path / f"r{size}.raw", [0x8000_0000 if size == 4 else evt3(8, 0), reserved], evt, fmt)
        start = len(path.read_bytes()) - 2 * size
        offset_error(lambda path=path: read_prophesee(path), path, start + size, "reserved type 0x")
        path.write_bytes(path.read_bytes()[: start + size] + b"\x00")
        offset_error(lambda path=path: read_prophesee(path), path, start + size,
                     f"file ends inside a {size}-byte EVT {evt} word")


# ----------------------------------------------------------------------------- ST-MNIST .mat


def test_stmnist_mat_written_from_the_layout(tmp_path):
    path = write_stmnist(tmp_path / "0.mat", [(0.5, {0: 1}), (0.5000014, {99: -1, 12: 1}), (1.25, {})])
    # taxel a -> x = a % 10, y = a // 10; events in sample order, then taxel order; t rounded to microseconds
    assert_events(read_events(path), [(0, 0, 500_000, 1), (2, 1, 500_001, 1), (9, 9, 500_001, 0)])


def test_real_stmnist_sample():
    pytest.importorskip("scipy.io")
    events = read_stmnist(shared_file("event-samples/sample_stmnist.mat"))
    # column 0 of 'spiketrain' is -1 at taxel 45 at 0.19662648 s
    assert len(events) == 2346 and tuple(events[0].tolist()) == (5, 4, 196626, 0)
    assert events["x"].max() < 10 and events["y"].max() < 10 and np.all(np.diff(events["t"]) >= 0)


def test_stmnist_errors_name_the_file(tmp_path, monkeypatch):
    scipy_io = pytest.importorskip("scipy.io")
    path = write_stmnist(tmp_path / "cut.mat", [(0.1 * k, {k: 1}) for k in range(50)])
    path.write_bytes(path.read_bytes()[:-7])
    offset_error(lambda: read_stmnist(path), path, 128, "runs past the end of the file")
    other = tmp_path / "other.mat"
    scipy_io.savemat(other, {"frames": np.zeros((3, 3))})
    offset_error(lambda: read_stmnist(other), other, 128, "expected a 'spiketrain' variable of shape [101, N]")
    scaled = write_stmnist(tmp_path / "scaled.mat", [(0.1, {3: 2})])
    offset_error(lambda: read_stmnist(scaled), scaled, 128, "other than -1, 0 and +1")
    junk = tmp_path / "junk.mat"
    junk.write_bytes(b"\x00" * 200)
    offset_error(lambda: read_stmnist(junk), junk, 0, "not a little-endian MATLAB 5 .mat file")
    monkeypatch.setitem(sys.modules, "scipy.io", None)
    with pytest.raises(MissingDependency, match=r"""needs the 'scipy' package: pip install "spikeforge\[events\]"$"""):
        read_stmnist(path)


def test_unknown_format_is_refused(tmp_path):
    path = tmp_path / "x.evt"
    path.write_bytes(b"EVT prophesee-like\n")
    offset_error(lambda: read_events(path), path, 0, "unknown event format")
