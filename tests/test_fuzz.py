"""Fuzzing /predict on the real server (hypothesis): whatever arrives, the answer is a 2xx or 4xx JSON body
and the server keeps answering /healthz. Requests go over raw sockets, so they can be as malformed as needed."""

from __future__ import annotations

import io
import os
import struct
import zlib

import httpx
import numpy as np
import pytest
from conftest import raw_exchange
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

# Bounded for the test suite (the file runs in about 30 s on 2 cores), and the same examples every run.
# For a longer, fresh search: FUZZ_EXAMPLES=2000 pytest tests/test_fuzz.py
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 60)), deadline=10_000,
                suppress_health_check=[HealthCheck.too_slow], derandomize="FUZZ_EXAMPLES" not in os.environ)

BOUNDARY = b"fuzz-boundary-1234"


def request(path: str, body: bytes, content_type: bytes, extra_headers: bytes = b"") -> bytes:
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: localhost\r\nContent-Type: " + content_type +
            b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n" + extra_headers + b"\r\n" + body)


def multipart(*parts: tuple[bytes, bytes], boundary: bytes = BOUNDARY) -> bytes:
    """(part headers, contents) pairs framed as multipart/form-data."""
    framed = b"".join(b"--" + boundary + b"\r\n" + headers + b"\r\n\r\n" + contents + b"\r\n"
                      for headers, contents in parts)
    return framed + b"--" + boundary + b"--\r\n"


def image_part(blob: bytes, filename: bytes = b"fuzz.bin") -> tuple[bytes, bytes]:
    return b'Content-Disposition: form-data; name="image"; filename="' + filename + b'"', blob


def upload(blob: bytes) -> bytes:
    return request("/predict", multipart(image_part(blob)), b"multipart/form-data; boundary=" + BOUNDARY)


@pytest.fixture(scope="module")
def health(server):
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


def assert_answered_and_alive(server, health, payload: bytes) -> int:
    """Send `payload`; the answer must be 2xx or 4xx with a JSON body, and /healthz must answer after it."""
    answer = raw_exchange(server.url, payload)
    assert answer.status is not None, "no answer"
    assert 200 <= answer.status < 300 or 400 <= answer.status < 500, (answer.status, answer.body[:300])
    assert answer.headers.get("content-type", "").startswith("application/json"), answer
    body = answer.json()
    assert body["success"] is (answer.status < 300)
    if answer.status >= 400:
        assert body["error"]["code"] and body["error"]["message"]
    assert health.get("/healthz").status_code == 200
    return answer.status


# --- bodies -----------------------------------------------------------------------------------------


@FUZZ
@given(body=st.binary(max_size=4096),
       content_type=st.sampled_from([b"multipart/form-data; boundary=" + BOUNDARY, b"multipart/form-data",
                                     b"multipart/form-data; boundary=", b"multipart/form-data; boundary=\"\"",
                                     b"multipart/form-data; boundary=" + b"b" * 200, b"multipart/mixed"]))
def test_random_bytes_as_a_multipart_body(server, health, body, content_type):
    status = assert_answered_and_alive(server, health, request("/predict", body, content_type))
    event(f"HTTP {status}")


DISPOSITIONS = [
    b'Content-Disposition: form-data; name="image"; filename="a.jpg"',
    b'Content-Disposition: form-data; name="image"',  # no filename: a text field
    b'Content-Disposition: form-data; filename="a.jpg"',  # no name
    b"Content-Disposition: form-data; name=image; filename=a.jpg",  # unquoted
    b'Content-Disposition: form-data; name="image"; filename=""',
    b'Content-Disposition: form-data; name="image"; filename="\xff\xfe\x00.jpg"',
    b'Content-Disposition: form-data; name="image"; filename*=UTF-8\'\'%E2%9C%8B.jpg',
    b"Content-Disposition: attachment",
    b"Content-Type: image/jpeg",  # no disposition at all
    b"",
]


@st.composite
def malformed_multipart(draw) -> tuple[bytes, bytes]:
    """(content type, body): parts with odd headers and contents, wrong or missing boundaries, truncation."""
    sample = _sample_image()
    contents = st.one_of(st.binary(max_size=512), st.just(sample), st.just(sample[: len(sample) // 3]),
                         st.builds(lambda inner: multipart((DISPOSITIONS[0], inner), boundary=b"inner"),
                                   st.binary(max_size=64)))
    headers = st.one_of(st.sampled_from(DISPOSITIONS),
                        st.binary(max_size=200).map(lambda junk: junk.replace(b"\r\n", b"")))
    parts = draw(st.lists(st.tuples(headers, contents), max_size=4))
    body = multipart(*parts)
    declared = draw(st.sampled_from([BOUNDARY, b"another-boundary", BOUNDARY[:-1], BOUNDARY + b"x"]))
    body = draw(st.sampled_from([body, body[: draw(st.integers(0, len(body)))], body.replace(b"\r\n", b"\n"),
                                 body + draw(st.binary(max_size=64)), b"\r\n" * 3 + body]))
    return b"multipart/form-data; boundary=" + declared, body


@FUZZ
@given(malformed_multipart())
def test_malformed_multipart(server, health, content_type_and_body):
    content_type, body = content_type_and_body
    status = assert_answered_and_alive(server, health, request("/predict", body, content_type))
    event(f"HTTP {status}")


@FUZZ
@given(name=st.binary(min_size=1, max_size=40).filter(lambda b: b":" not in b and b"\r" not in b and b"\n" not in b),
       value=st.one_of(st.binary(max_size=256), st.integers(0, 200_000).map(lambda n: b"v" * n)).map(
           lambda v: v.replace(b"\r", b"").replace(b"\n", b"")),
       count=st.integers(1, 50))
def test_odd_and_huge_header_values(server, health, name, value, count):
    extra = b"".join(b"X-" + name + b"-" + str(i).encode() + b": " + value + b"\r\n" for i in range(count))
    body = multipart(image_part(_sample_image()))
    status = assert_answered_and_alive(server, health, request("/predict", body,
                                                               b"multipart/form-data; boundary=" + BOUNDARY, extra))
    event(f"HTTP {status}")


# --- images ---------------------------------------------------------------------------------------


def _sample_image() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 12), (180, 140, 120)).save(buffer, "JPEG")
    return buffer.getvalue()


def png(width: int, height: int, bit_depth: int, colour_type: int, data: bytes, good_crc: bool) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) if good_crc else 0
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(data)) + chunk(b"IEND", b"")


def gif(width: int, height: int, rest: bytes) -> bytes:
    return b"GIF89a" + struct.pack("<HHBBB", width, height, 0xF7, 0, 0) + rest


def bmp(width: int, height: int, bits: int, compression: int, rest: bytes) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, bits, compression, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info) + len(rest), 0, 0, 14 + len(info)) + info + rest


def jpeg(width: int, height: int, rest: bytes) -> bytes:
    start_of_frame = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\x01\x11\x00\x02\x11\x00\x03\x11\x00"
    return b"\xff\xd8" + start_of_frame + rest + b"\xff\xd9"


dimension = st.one_of(st.integers(0, 70_000), st.sampled_from([0, 1, 65_535, 100_000, 2**31 - 1, 2**32 - 1]))
absurd_images = st.one_of(
    st.builds(png, dimension, dimension, st.sampled_from([1, 2, 4, 8, 16, 3, 255]), st.integers(0, 7),
              st.binary(max_size=256), st.booleans()),
    st.builds(gif, st.integers(0, 65_535), st.integers(0, 65_535), st.binary(max_size=256)),
    st.builds(bmp, st.integers(-2**31, 2**31 - 1), st.integers(-2**31, 2**31 - 1), st.sampled_from([0, 1, 4, 8, 16,
              24, 32, 7]), st.integers(0, 6), st.binary(max_size=256)),
    st.builds(jpeg, st.integers(0, 65_535), st.integers(0, 65_535), st.binary(max_size=256)),
)


@FUZZ
@given(absurd_images)
def test_images_with_absurd_dimensions_or_broken_headers(server, health, blob):
    status = assert_answered_and_alive(server, health, upload(blob))
    event(f"HTTP {status}")


def test_a_png_claiming_100000_by_100000_pixels_is_refused_from_its_header(server, health):
    blob = png(100_000, 100_000, 8, 2, b"\0" * 64, True)
    assert assert_answered_and_alive(server, health, upload(blob)) == 413


@FUZZ
@given(st.data())
def test_real_images_with_bytes_flipped_or_cut(server, health, data):
    blob = bytearray(SAVED[data.draw(st.sampled_from(list(SAVED)))])
    for _ in range(data.draw(st.integers(1, 8))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    blob = blob[: data.draw(st.integers(1, len(blob)))]
    status = assert_answered_and_alive(server, health, upload(bytes(blob)))
    event(f"HTTP {status}")


# --- every image mode -----------------------------------------------------------------------------

MODES = ["1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "I", "I;16", "I;16L", "I;16B", "F", "LA",
         "PA", "La", "RGBa", "RGBX"]
FORMATS = ["PNG", "TIFF", "WEBP", "JPEG", "BMP", "GIF", "PPM", "ICO", "TGA", "SGI", "PCX", "QOI", "JPEG2000"]


def _saved(mode: str, fmt: str, size: tuple[int, int], seed: int = 0) -> bytes:
    """An image of `mode` with random pixels saved as `fmt`; b"" when Pillow cannot write that combination."""
    pixels = np.random.default_rng(seed).integers(0, 256, len(Image.new(mode, size).tobytes()), dtype=np.uint8)
    image = Image.frombytes(mode, size, pixels.tobytes())
    if mode == "F":  # random bytes as floats include NaN: keep the pixels numbers here (NaN is tested below)
        image = Image.fromarray(np.random.default_rng(seed).random(size[::-1], dtype=np.float32), "F")
    buffer = io.BytesIO()
    try:
        image.save(buffer, fmt)
    except (OSError, ValueError, KeyError, TypeError):
        return b""
    return buffer.getvalue()


def _pillow_reads(blob: bytes) -> bool:
    try:
        Image.open(io.BytesIO(blob)).load()
        return True
    except Exception:  # noqa: BLE001 - any failure means Pillow cannot read it back
        return False


SAVED = {(mode, fmt): blob for mode in MODES for fmt in FORMATS if (blob := _saved(mode, fmt, (19, 11)))}


@pytest.mark.parametrize("mode, fmt", list(SAVED))
def test_every_image_mode_pillow_can_write_is_classified(server, health, mode, fmt):
    blob = SAVED[mode, fmt]
    expected = 200 if _pillow_reads(blob) else 400
    assert assert_answered_and_alive(server, health, upload(blob)) == expected


def test_the_formats_cover_every_mode_in_png_tiff_or_webp():
    assert {mode for mode, fmt in SAVED if fmt in ("PNG", "TIFF", "WEBP")} == set(MODES) - {"La"}


def test_a_float_image_with_nan_pixels_is_a_400(server, health):
    values = np.array([[np.nan, 1.0], [np.inf, 0.5]], dtype=np.float32)
    buffer = io.BytesIO()
    Image.fromarray(values, "F").save(buffer, "TIFF")
    assert assert_answered_and_alive(server, health, upload(buffer.getvalue())) == 400


@FUZZ
@given(mode=st.sampled_from(MODES), fmt=st.sampled_from(["PNG", "TIFF", "WEBP"]),
       size=st.tuples(st.integers(1, 80), st.integers(1, 80)), seed=st.integers(0, 2**16))
def test_random_images_of_every_mode(server, health, mode, fmt, size, seed):
    blob = _saved(mode, fmt, size, seed)
    if blob:
        expected = 200 if _pillow_reads(blob) else 400
        assert assert_answered_and_alive(server, health, upload(blob)) == expected


def test_a_ppm_with_a_broken_header_is_a_400(server, health):
    """Found by this fuzzing: Pillow's PPM reader raised ValueError from Image.open, answered with a 500."""
    assert assert_answered_and_alive(server, health, upload(b"P6\nq1 1\n255\n" + b"\0" * 12)) == 400
