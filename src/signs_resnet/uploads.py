"""The image files of a multipart/form-data body (the original's `curl -F image=@sample.jpg`).

python-multipart's parser, fed the whole body at once (the body limit in guards.py has already
bounded it), keeping each part in memory. Starlette's `request.form()` does the same with a spooled
temporary file per part and an await per write: a third of the HTTP work of a small upload.
"""

from __future__ import annotations

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from .errors import ApiError


class _Part:
    def __init__(self):
        self.headers: dict[bytes, bytes] = {}
        self.chunks: list[bytes] = []


def multipart_boundary(content_type: str, field: str = "image") -> bytes:
    """The boundary of a multipart/form-data Content-Type; ApiError 415 for any other type (checked before
    the body is read), 400 without a boundary."""
    kind, options = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        raise ApiError(415, "unsupported_media_type",
                       f"send the image as multipart/form-data, field '{field}' (got {content_type or 'no'} "
                       f"content type), e.g. curl -F {field}=@sample.jpg")
    if not options.get(b"boundary"):
        raise _malformed("no boundary in the Content-Type header")
    return options[b"boundary"]


def image_uploads(boundary: bytes, body: bytes, max_images: int, field: str = "image") -> list[tuple[str, bytes]]:
    """(filename, bytes) of each file in form field `field`, in upload order. Raises ApiError: 413 past
    `max_images` files (or as many other fields), 400 when the body cannot be parsed, the field is
    missing, is not a file, or a file is empty."""
    parts = _parse(boundary, body, max_images)
    uploads = []
    for part in parts:
        _, disposition = parse_options_header(part.headers.get(b"content-disposition", b""))
        if disposition.get(b"name") != field.encode():
            continue
        if b"filename" not in disposition:
            raise ApiError(400, "not_a_file", f"image {len(uploads) + 1}: the '{field}' field must be a file upload")
        name = _text(disposition[b"filename"])
        blob = b"".join(part.chunks)
        if not blob:
            raise ApiError(400, "empty_file", f"image {len(uploads) + 1} ({name}): the file is empty")
        uploads.append((name, blob))
    if not uploads:
        raise ApiError(400, "missing_image", f"no '{field}' field in the form; send the file as -F {field}=@sample.jpg")
    return uploads


def _parse(boundary: bytes, body: bytes, max_images: int) -> list[_Part]:
    """The complete parts of `body` (a truncated last part is left out)."""
    parts: list[_Part] = []
    current = _Part()
    header = [b"", b""]
    counts = {"files": 0, "fields": 0}

    def begin_part() -> None:
        nonlocal current
        current = _Part()

    def end_header() -> None:
        current.headers[header[0].lower()] = header[1]
        header[:] = [b"", b""]

    def end_headers() -> None:
        _, disposition = parse_options_header(current.headers.get(b"content-disposition", b""))
        if b"name" not in disposition:
            raise _malformed("a part without a Content-Disposition name")
        kind = "files" if b"filename" in disposition else "fields"
        counts[kind] += 1
        if counts[kind] > max_images:
            raise ApiError(413, "too_many_images", f"at most {max_images} images per request")

    def add_to_header(index: int):
        def add(data: bytes, start: int, end: int) -> None:
            header[index] += data[start:end]
        return add

    parser = MultipartParser(boundary, {
        "on_part_begin": begin_part,
        "on_header_field": add_to_header(0),
        "on_header_value": add_to_header(1),
        "on_header_end": end_header,
        "on_headers_finished": end_headers,
        "on_part_data": lambda data, start, end: current.chunks.append(data[start:end]),
        "on_part_end": lambda: parts.append(current),
    })
    try:
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
