"""iniVation AEDAT 4.0 files: the polarity events of their event streams (reader and writer).

The framing, as iniVation documents it (docs.inivation.com, "AEDAT 4.0"):

    "#!AER-DAT4.0\\r\\n"                      version line (14 bytes)
    u32 n, IOHeader (n bytes)               a FlatBuffer (identifier "IOHE"): compression
                                            (int32: 0 none, 1 LZ4, 2 LZ4 high, 3 Zstd, 4 Zstd
                                            high), dataTablePosition (int64, -1: none),
                                            infoNode (string: XML naming each stream's id,
                                            typeIdentifier and sizeX/sizeY)
    packets                                 i32 stream id, i32 size, then size bytes: one
                                            FlatBuffer (compressed as the header says) of the
                                            stream's type, size-prefixed (u32); "EVTS" is an
                                            EventPacket, a table
                                            whose field 0 is a vector of Event structs
                                            {int64 timestamp µs, int16 x, int16 y, bool on}
                                            (16 bytes each, 8-byte aligned)
    the file data table (optional)          at dataTablePosition: an index, not read here

Read here: every packet of every stream whose typeIdentifier is EVTS, uncompressed or, where
the Python package ``lz4`` or ``zstandard`` is installed, LZ4- or Zstd-compressed. Frames,
IMU and trigger streams are skipped. Anything else (another version line, a header that is not
a FlatBuffer, a compressed file without its decompressor) is refused in one line.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np

from snncompile.ir.diagnostics import CompileError, Diagnostic

MAGIC = b"#!AER-DAT4.0\r\n"
COMPRESSION = {0: "none", 1: "LZ4", 2: "LZ4 (high)", 3: "Zstd", 4: "Zstd (high)"}
EVENT = np.dtype([("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("on", "u1"), ("pad", "V3")])


def _wrong(path: Any, what: str, hint: str | None = None) -> CompileError:
    return CompileError("wrong event file", [Diagnostic(f"{path}: {what}", hint=hint)])


# ------------------------------------------------------------------------------ FlatBuffers
def _table(buf: bytes, pos: int) -> tuple[int, list[int]]:
    """(table position, field offsets) of the table at ``pos`` (0: field absent)."""
    vt = pos - struct.unpack_from("<i", buf, pos)[0]
    vt_size = struct.unpack_from("<H", buf, vt)[0]
    n = (vt_size - 4) // 2
    return pos, list(struct.unpack_from(f"<{n}H", buf, vt + 4))


def _field(buf: bytes, table: tuple[int, list[int]], i: int) -> int | None:
    pos, offs = table
    return pos + offs[i] if i < len(offs) and offs[i] else None


def _vector(buf: bytes, at: int) -> tuple[int, int]:
    """(start, length) of the vector (or string) an offset field at ``at`` points to."""
    start = at + struct.unpack_from("<I", buf, at)[0]
    return start + 4, struct.unpack_from("<I", buf, start)[0]


def _root(buf: bytes) -> tuple[int, list[int]]:
    return _table(buf, struct.unpack_from("<I", buf, 0)[0])


# ------------------------------------------------------------------------------ reading
def _header(path: Any, f: Any) -> tuple[int, int, str]:
    """(compression, data table position, info XML) after the version line."""
    if f.read(len(MAGIC)) != MAGIC:
        raise _wrong(path, "no AEDAT 4.0 version line ('#!AER-DAT4.0')",
                     hint="AEDAT 2/3.1 files are not read; convert them with dv or tonic")
    raw = f.read(4)
    if len(raw) < 4:
        raise _wrong(path, "truncated AEDAT 4.0 header")
    n = struct.unpack("<I", raw)[0]
    buf = f.read(n)
    try:
        if len(buf) < n or n < 12:
            raise ValueError("short")
        t = _root(buf)
        at = _field(buf, t, 0)
        comp = struct.unpack_from("<i", buf, at)[0] if at is not None else 0
        at = _field(buf, t, 1)
        table_pos = struct.unpack_from("<q", buf, at)[0] if at is not None else -1
        at = _field(buf, t, 2)
        info = ""
        if at is not None:
            s, ln = _vector(buf, at)
            info = buf[s:s + ln].decode("utf-8")
    except (struct.error, ValueError, UnicodeDecodeError):
        raise _wrong(path, "the AEDAT 4.0 IOHeader is not a readable FlatBuffer") from None
    if comp not in COMPRESSION:
        raise _wrong(path, f"unknown AEDAT 4.0 compression {comp}")
    return comp, table_pos, info


def check_aedat4(path: str | Path) -> None:
    """The version line and the IOHeader (``read_aedat4`` refuses what this refuses)."""
    with open(path, "rb") as f:
        comp, _, _ = _header(path, f)
    _decompressor(path, comp)


def event_streams(info: str) -> dict[int, tuple[int, int] | None]:
    """Stream id -> (sizeX, sizeY) (None where not stated) of the EVTS streams in the XML."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(info) if info.strip() else None
    except ET.ParseError:
        return {}
    out: dict[int, tuple[int, int] | None] = {}
    for node in root.iter("node") if root is not None else ():
        name = node.get("name", "")
        attrs = {a.get("key"): (a.text or "").strip() for a in node.findall("attr")}
        if not name.isdigit() or attrs.get("typeIdentifier") != "EVTS":
            continue
        size = node.find("node[@name='info']")
        dims = {a.get("key"): (a.text or "").strip() for a in size.findall("attr")} \
            if size is not None else {}
        ok = dims.get("sizeX", "").isdigit() and dims.get("sizeY", "").isdigit()
        out[int(name)] = (int(dims["sizeX"]), int(dims["sizeY"])) if ok else None
    return out


def _decompressor(path: Any, comp: int) -> Any:
    if comp == 0:
        return None
    try:
        if comp in (1, 2):
            import lz4.frame  # type: ignore[import-not-found]

            return lz4.frame.decompress
        import zstandard  # type: ignore[import-not-found]

        return zstandard.ZstdDecompressor().decompressobj().decompress
    except ImportError:
        pkg = "lz4" if comp in (1, 2) else "zstandard"
        raise _wrong(path, f"{COMPRESSION[comp]}-compressed AEDAT 4.0 packets need the Python "
                     f"package {pkg}", hint=f"pip install {pkg}, or save the recording "
                                            "uncompressed") from None


def read_aedat4(path: str | Path) -> np.ndarray:
    """The polarity events (x, y, t, p) of every EVTS stream of an AEDAT 4.0 file."""
    from snncompile.events import _events

    with open(path, "rb") as f:
        comp, table_pos, info = _header(path, f)
        unpack = _decompressor(path, comp)
        streams = event_streams(info)
        if not streams:
            raise _wrong(path, "no event stream (typeIdentifier EVTS) in the AEDAT 4.0 header")
        parts = []
        while table_pos < 0 or f.tell() < table_pos:
            head = f.read(8)
            if len(head) < 8:
                break
            sid, size = struct.unpack("<ii", head)
            body = f.read(size)
            if size < 0 or len(body) < size:
                raise _wrong(path, f"truncated packet at byte {f.tell() - len(body) - 8}")
            if sid in streams:  # a size-prefixed FlatBuffer
                parts.append(_packet(path, (unpack(body) if unpack else body)[4:]))
    ev = np.concatenate(parts) if parts else np.zeros(0, EVENT)
    return _events(ev["x"], ev["y"], ev["t"], ev["on"])


def _packet(path: Any, buf: bytes) -> np.ndarray:
    """The Event structs of one EventPacket FlatBuffer."""
    try:
        t = _root(buf)
        at = _field(buf, t, 0)
        if at is None:
            return np.zeros(0, EVENT)
        start, n = _vector(buf, at)
        if start + n * EVENT.itemsize > len(buf):
            raise ValueError("short")
    except (struct.error, ValueError):
        raise _wrong(path, "an event packet is not a readable EventPacket FlatBuffer") from None
    return np.frombuffer(buf, EVENT, n, start)


# ------------------------------------------------------------------------------ writing
def _event_packet(ev: np.ndarray) -> bytes:
    """One size-prefixed EventPacket FlatBuffer: size, root offset, "EVTS", vtable, table,
    vector of structs (8-byte aligned counting the 4-byte size prefix)."""
    head = struct.pack("<I4s", 16, b"EVTS")  # the table at 16
    vtable = struct.pack("<HHH2x", 6, 8, 4)  # 8..16: field 0 at table + 4
    table = struct.pack("<iI", 16 - 8, 24 - 20)  # 16..24: the vector's length at 24
    fb = head + vtable + table + struct.pack("<I", len(ev)) + ev.tobytes()  # elements at 28
    return struct.pack("<I", len(fb)) + fb


def _io_header(info: str) -> bytes:
    """The IOHeader FlatBuffer: compression none, no data table, ``info``."""
    text = info.encode("utf-8")
    head = struct.pack("<I4s", 24, b"IOHE")  # the table at 24
    vtable = struct.pack("<HHHHH6x", 10, 20, 4, 8, 16)  # 8..24: comp, table pos, info
    table = struct.pack("<iiqI", 24 - 8, 0, -1, 44 - 40)  # 24..44: the string's length at 44
    return head + vtable + table + struct.pack("<I", len(text)) + text + b"\0"


def write_aedat4(path: str | Path, x: Any, y: Any, t: Any, p: Any, *,
                 size: tuple[int, int], packet: int = 4096) -> None:
    """Events as an uncompressed AEDAT 4.0 file: one EVTS stream (id 0) of ``size`` (W, H),
    in packets of at most ``packet`` events."""
    ev = np.zeros(len(x), EVENT)
    ev["t"], ev["x"], ev["y"], ev["on"] = t, x, y, np.asarray(p) > 0
    info = ('<dv version="2.0"><node name="outInfo" path="/outInfo/"><node name="0" '
            'path="/outInfo/0/"><attr key="compression" type="string">NONE</attr>'
            '<attr key="typeIdentifier" type="string">EVTS</attr><node name="info" '
            f'path="/outInfo/0/info/"><attr key="sizeX" type="int">{size[0]}</attr>'
            f'<attr key="sizeY" type="int">{size[1]}</attr></node></node></node></dv>')
    hdr = _io_header(info)
    with open(path, "wb") as f:
        f.write(MAGIC + struct.pack("<I", len(hdr)) + hdr)
        for i in range(0, max(len(ev), 1), packet):
            body = _event_packet(ev[i:i + packet])
            f.write(struct.pack("<ii", 0, len(body)) + body)
