"""Bytes to text the way mail clients do it: labels that lie, stateful and missing charsets.

Senders label text with the charset they think they used; the bytes are often
in a superset (Windows code pages, GB18030, CP949, CP932). Decoding with the
superset the clients use gives the text the person wrote, where the label's own
codec gives U+FFFD or fails. Text without a usable label is decoded with the
message's own hints first (other parts' charsets, Content-Language), then a
statistical detector; every guess is reported so the trace shows it.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

# Label (lower case, Python's normalisation not applied) -> codec that decodes a superset.
_SUPERSET = {
    "gb2312": "gb18030",
    "gb_2312-80": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "cp936": "gb18030",
    "euc-cn": "gb18030",
    "chinese": "gb18030",
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "ksc5601": "cp949",
    "euc-kr": "cp949",
    "korean": "cp949",
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "iso_8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "l1": "cp1252",
    "iso-8859-9": "cp1254",
    "latin5": "cp1254",
    "iso-8859-11": "cp874",
    "tis-620": "cp874",
    "tis620": "cp874",
    "windows-874": "cp874",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "ms_kanji": "cp932",
    "csshiftjis": "cp932",
    "iso-2022-jp": "iso-2022-jp-ms",
    "csiso2022jp": "iso-2022-jp-ms",
    "iso-2022-jp-2": "iso-2022-jp-ms",
    "big5": "big5hkscs",
    "big-5": "big5hkscs",
    "cn-big5": "big5hkscs",
    "x-x-big5": "big5hkscs",
    "cp950": "big5hkscs",
    "unicode-1-1-utf-7": "utf-7",
    "utf8": "utf-8",
}
# Labels that say nothing about the bytes.
_NO_LABEL = {"", "unknown-8bit", "x-unknown", "unknown", "default", "x-user-defined", "us-ascii"}
# Content-Language -> the charsets mail in that language is usually written in.
_LANGUAGE = {
    "ja": ("cp932", "euc_jp"),
    "zh": ("gb18030", "big5hkscs"),
    "ko": ("cp949",),
    "ru": ("cp1251", "koi8_r"),
    "uk": ("cp1251", "koi8_u"),
    "bg": ("cp1251",),
    "th": ("cp874",),
    "tr": ("cp1254",),
    "el": ("cp1253",),
    "he": ("cp1255",),
    "ar": ("cp1256",),
    "pl": ("cp1250",),
    "cs": ("cp1250",),
    "hu": ("cp1250",),
}
# Codecs whose 7-bit bytes are not ASCII text.
_SEVEN_BIT_STATEFUL = {
    "iso-2022-jp-ms",
    "iso2022_jp",
    "iso2022_jp_1",
    "iso2022_jp_2",
    "iso2022_jp_2004",
    "iso2022_jp_3",
    "iso2022_jp_ext",
    "iso2022_kr",
    "utf-7",
    "hz",
}
# Text shorter than this gives the detector too little to go on.
_DETECT_MIN = 8


@dataclass(frozen=True)
class Decoded:
    text: str
    codec: str
    note: str = ""  # why this is not a plain decode with the declared label ("" = it is)


def codec_for(label: str | None) -> str | None:
    """The codec to decode text labelled ``label`` with, or None when the label is unusable."""
    name = (label or "").strip().strip('"').lower()
    if name in _NO_LABEL:
        return None
    name = _SUPERSET.get(name, name)
    if name == "iso-2022-jp-ms":
        return name
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def language_hints(content_language: str | None) -> list[str]:
    out: list[str] = []
    for tag in (content_language or "").replace(";", ",").split(","):
        out += [c for c in _LANGUAGE.get(tag.strip().lower()[:2], ()) if c not in out]
    return out


def decode(data: bytes, label: str | None, hints: list[str] | tuple[str, ...] = ()) -> Decoded:
    """``data`` as text: the declared label's superset, else hints, else a detector guess."""
    codec = codec_for(label)
    if data.isascii() and codec not in _SEVEN_BIT_STATEFUL:
        return Decoded(data.decode("ascii"), "ascii")
    if codec is not None:
        text = _strict(data, codec)
        if text is not None:
            return Decoded(text, codec)
    why = f"charset {label!r} " + ("does not decode" if codec else "unusable")
    if not label or not str(label).strip():
        why = "no charset declared"
    # A known label that fails is mostly right with a few bad bytes: only UTF-8 and the
    # message's hints may replace it, never a statistical guess on what may be garbage.
    guessed = guess(data, hints, detect=codec is None)
    if guessed is not None:
        return Decoded(guessed.text, guessed.codec, f"{why}; {guessed.note}")
    return Decoded(_replace(data, codec or "utf-8"), codec or "utf-8", f"{why}; replaced")


def guess(
    data: bytes, hints: list[str] | tuple[str, ...] = (), *, detect: bool = True
) -> Decoded | None:
    """Unlabelled bytes: UTF-8, then the message's hints, then the detector, else cp1252."""
    text = _strict(data, "utf-8")
    if text is not None:
        return Decoded(text, "utf-8", "decoded as utf-8")
    for hint in hints:
        codec = codec_for(hint)
        if codec and codec != "utf-8" and (text := _strict(data, codec)) is not None:
            return Decoded(text, codec, f"decoded as {codec} (hint from the message)")
    if not detect:
        return None
    if len(data) >= _DETECT_MIN:
        detected = _detect(data)
        if detected is not None:
            return detected
    text = _strict(data, "cp1252")
    if text is not None:
        return Decoded(text, "cp1252", "decoded as cp1252 (fallback)")
    return None


def _detect(data: bytes) -> Decoded | None:
    from charset_normalizer import from_bytes  # heavy: only for mail that needs a guess

    matches = list(from_bytes(data))
    if not matches:
        return None
    best = matches[0]
    # Short Latin text scores the same in many code pages: Windows-1252 is the likeliest.
    for match in matches[1:]:
        tie = (match.chaos, match.coherence) == (best.chaos, best.coherence)
        if tie and match.encoding == "cp1252":
            best = match
    if not best.encoding:
        return None
    codec = codec_for(best.encoding) or best.encoding
    text = _strict(data, codec)
    if text is None:
        return None
    return Decoded(text, codec, f"guessed {codec} (charset-normalizer)")


def _strict(data: bytes, codec: str) -> str | None:
    try:
        if codec == "iso-2022-jp-ms":
            return _iso2022jp(data)
        text = data.decode(codec)
        if codec == "cp1252" and "\ufffd" in text:
            return None
        return text
    except (UnicodeDecodeError, LookupError):
        if codec == "cp1252":  # 0x81, 0x8d, 0x8f, 0x90, 0x9d: undefined, ISO-8859-1 controls
            return data.decode("latin-1")
        return None


def _replace(data: bytes, codec: str) -> str:
    if codec == "iso-2022-jp-ms":
        codec = "iso2022_jp_ext"
    return data.decode(codec, "replace")


def _iso2022jp(data: bytes) -> str:
    """ISO-2022-JP with the Microsoft (CP50220) and JIS X 0212/0213 extensions clients send."""
    for codec in ("iso2022_jp", "iso2022_jp_2", "iso2022_jp_ext"):
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            continue
    return _jis_via_cp932(data)


def _jis_via_cp932(data: bytes) -> str:
    """Convert JIS X 0208 runs to Shift_JIS and decode with cp932 (NEC/IBM extensions)."""
    out = bytearray()
    mode = "ascii"
    i = 0
    while i < len(data):
        byte = data[i]
        if byte == 0x1B:
            seq = data[i + 1 : i + 3]
            if seq in (b"$@", b"$B"):
                mode, i = "jis", i + 3
                continue
            if seq in (b"(B", b"(J"):
                mode, i = "ascii", i + 3
                continue
            if seq == b"(I":
                mode, i = "kana", i + 3
                continue
            raise UnicodeDecodeError("iso-2022-jp", data, i, i + 1, "unknown escape")
        if byte == 0x0E:
            mode, i = "kana", i + 1
            continue
        if byte == 0x0F:
            mode, i = "ascii", i + 1
            continue
        if mode == "jis" and byte > 0x20 and i + 1 < len(data):
            j1, j2 = byte, data[i + 1]
            s1 = (j1 + 1) // 2 + (0x70 if j1 <= 0x5E else 0xB0)
            s2 = j2 + (0x1F if j1 % 2 else 0x7E)
            if j1 % 2 and s2 >= 0x7F:
                s2 += 1
            out += bytes((s1 & 0xFF, s2 & 0xFF))
            i += 2
            continue
        out.append(byte + 0x80 if mode == "kana" and 0x21 <= byte <= 0x5F else byte)
        i += 1
    return bytes(out).decode("cp932")
