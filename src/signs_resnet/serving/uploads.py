"""The image files of a multipart/form-data body (the original's `curl -F image=@sample.jpg`).

python-multipart's parser, fed the whole body at once (the body limit in guards.py has already
bounded it), keeping each part in memory; the parser itself bounds each part's headers. Starlette's
`request.form()` does the same through a spooled temporary file per part and an await per write,
which costs more than the parsing itself for a small upload (docs/performance.md, "The /predict route").
"""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from signs_resnet.serving.errors import ApiError

FIELD = "image"  # the form field holding the images, as in the original API
MAX_BOUNDARY = 256  # bytes; python-multipart's limit (RFC 2046 allows 70)


@dataclass
class _Part:
    name: bytes | None = None
    filename: bytes | None = None  # None: a plain field, not a file
    chunks: list[bytes] = field(default_factory=list)


def multipart_boundary(content_type: str) -> bytes:
    """The boundary of a multipart/form-data Content-Type, checked before the body is read: ApiError 415
    for any other type, 400 without a usable boundary."""
    kind, options = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        raise ApiError(415, "unsupported_media_type",
                       f"send the image as multipart/form-data, field '{FIELD}' (got {content_type or 'no'} "
                       f"content type), e.g. curl -F {FIELD}=@sample.jpg")
    boundary = options.get(b"boundary")
    if not boundary:
        raise _malformed("no boundary in the Content-Type header")
    if len(boundary) > MAX_BOUNDARY:
        raise _malformed(f"a boundary of {len(boundary)} bytes (at most {MAX_BOUNDARY})")
    return boundary


def image_uploads(boundary: bytes, body: bytes, max_images: int) -> list[tuple[str, bytes]]:
    """(filename, bytes) of each file in form field `image`, in upload order. Raises ApiError: 413 past
    `max_images` files (or as many other fields), 400 when the body cannot be parsed, the field is
    missing, is not a file, or a file is empty."""
    uploads = []
    for part in _parse(boundary, body, max_images):
        if part.name != FIELD.encode():
            continue
        if part.filename is None:
            raise ApiError(400, "not_a_file", f"image {len(uploads) + 1}: the '{FIELD}' field must be a file upload")
        name, blob = _text(part.filename), b"".join(part.chunks)
        if not blob:
            raise ApiError(400, "empty_file", f"image {len(uploads) + 1} ({name}): the file is empty")
        uploads.append((name, blob))
    if not uploads:
        raise ApiError(400, "missing_image", f"no '{FIELD}' field in the form; send the file as -F {FIELD}=@sample.jpg")
    return uploads


def _parse(boundary: bytes, body: bytes, max_images: int) -> list[_Part]:
    """The complete parts of `body` (a truncated last part is left out)."""
    parts: list[_Part] = []
    current = _Part()
    header = [b"", b""]  # name, value of the header being read
    disposition = b""
    counts = {"files": 0, "fields": 0}

    def begin_part() -> None:
        nonlocal current, disposition
        current, disposition = _Part(), b""

    def end_header() -> None:
        nonlocal disposition
        if header[0].lower() == b"content-disposition":
            disposition = header[1]
        header[:] = [b"", b""]

    def end_headers() -> None:
        _, options = parse_options_header(disposition)
        if b"name" not in options:
            raise _malformed("a part without a Content-Disposition name")
        current.name, current.filename = options[b"name"], options.get(b"filename")
        kind = "fields" if current.filename is None else "files"
        counts[kind] += 1
        if counts[kind] > max_images:
            raise ApiError(413, "too_many_images", f"at most {max_images} images per request")

    def add_to_header(index: int):
        def add(data: bytes, start: int, end: int) -> None:
            header[index] += data[start:end]
        return add

    try:
        parser = MultipartParser(boundary, {
            "on_part_begin": begin_part,
            "on_header_field": add_to_header(0),
            "on_header_value": add_to_header(1),
            "on_header_end": end_header,
            "on_headers_finished": end_headers,
            "on_part_data": lambda data, start, end: current.chunks.append(data[start:end]),
            "on_part_end": lambda: parts.append(current),
        })
        parser.write(body)
        parser.finalize()
    except FormParserError as error:
        raise _malformed(str(error)) from None
    return parts


def _malformed(reason: str) -> ApiError:
    return ApiError(400, "malformed_multipart", f"not a readable multipart/form-data body: {reason}")


def _text(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode("latin-1")
