"""The web service: `POST /predict` takes one photo and answers every face's class, `/` is a page
that uploads a photo or a webcam snapshot and draws the answer.

    POST /predict    multipart/form-data, the photo in the field `file` (JPEG, PNG, WebP or BMP)
    GET  /health     {"status": "ok"}
    GET  /version    the model's info (id, recipe, backend, members, preprocessing, labels)
    GET  /docs       the OpenAPI page (Swagger UI, served from the swagger-ui-bundle package: works offline)
    GET  /           the page (static/, no external fetches)

An upload lives in memory only: its bytes are counted while they arrive and refused past the cap,
a client's file name is never read, and a photo's size is read from its header before any pixel
is decoded, so a small file that unpacks to gigapixels is refused without unpacking it.
"""
from __future__ import annotations

import io
import logging
import socket
import struct
import time
from pathlib import Path

import cv2
import numpy as np
import swagger_ui_bundle
from fastapi import FastAPI, HTTPException, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image, UnidentifiedImageError
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool

from ..errors import MaskclsError
from ..faces.detect import MIN_FACE_PIXELS
from ..imageio import truncation_of_bytes

STATIC = Path(__file__).resolve().parent / "static"
MEGABYTE = 1 << 20
# Boundaries and part headers around the photo; a body larger than the cap plus this is refused.
FORM_OVERHEAD = 64 * 1024
MAX_PIXELS = 40_000_000  # a 40 MP photo decodes to 120 MB of RGB; phones take 12-50 MP
PIL_FORMATS = ("JPEG", "PNG", "WEBP", "BMP")  # a camera MPO (a JPEG with previews) opens as JPEG
LOOPBACK = ("127.0.0.1", "localhost", "::1")
# Our page fetches nothing from elsewhere; the policy makes a slip in it fail loudly in the browser.
PAGE_POLICY = "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; object-src 'none'; frame-ancestors 'none'"
PREDICT_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"], "properties": {"file": {"type": "string", "format": "binary"}}}}}}}

log = logging.getLogger("maskcls.serve")


class UploadTooLarge(Exception):
    pass


class FileField:
    """python-multipart callbacks that keep the bytes of the form field `file` in memory and drop
    every other field; past `cap` bytes they stop the upload."""

    def __init__(self, cap: int):
        self.cap = cap
        self.data: bytearray | None = None
        self._target: bytearray | None = None
        self._name, self._value, self._is_file = bytearray(), bytearray(), False

    def callbacks(self) -> dict:
        return {"on_part_begin": self._begin, "on_header_field": lambda d, s, e: self._name.extend(d[s:e]),
                "on_header_value": lambda d, s, e: self._value.extend(d[s:e]), "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished, "on_part_data": self._part_data}

    def _begin(self) -> None:
        self._target, self._is_file = None, False

    def _header_end(self) -> None:
        if bytes(self._name).strip().lower() == b"content-disposition":
            _, options = parse_options_header(bytes(self._value))
            self._is_file = options.get(b"name") == b"file"  # the filename option is never looked at
        self._name, self._value = bytearray(), bytearray()

    def _headers_finished(self) -> None:
        if self._is_file and self.data is None:  # a second `file` field is dropped
            self.data = self._target = bytearray()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._target is not None:
            if len(self._target) + end - start > self.cap:
                raise UploadTooLarge
            self._target.extend(data[start:end])


class PageHeaders:
    """ASGI middleware: `nosniff` on every answer, the content policy on the page and its files."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        page = scope["path"] == "/" or scope["path"].startswith("/static/")

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"x-content-type-options", b"nosniff")]
                if page:
                    headers.append((b"content-security-policy", PAGE_POLICY.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def too_large(cap: int) -> HTTPException:
    return HTTPException(413, f"upload: larger than the {cap / MEGABYTE:.3g} MB limit; send a smaller photo "
                              "(or start the service with a larger --max-upload-mb)")


async def read_upload(request: Request, cap: int) -> bytes:
    """The photo's bytes from a multipart body, read chunk by chunk and never more than the cap."""
    kind, options = parse_options_header(request.headers.get("content-type", ""))
    if kind != b"multipart/form-data" or not options.get(b"boundary"):
        raise HTTPException(415, "send the photo as multipart/form-data in the form field `file`, e.g. curl -F file=@photo.jpg")
    limit = cap + FORM_OVERHEAD
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_large(cap)  # refused before a byte of the body is read
    field = FileField(cap)
    parser = MultipartParser(options[b"boundary"], field.callbacks())
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:  # a chunked body, or one longer than its Content-Length said
                raise too_large(cap)
            parser.write(chunk)
        parser.finalize()
    except UploadTooLarge:
        raise too_large(cap) from None
    except FormParserError as exc:
        raise HTTPException(400, f"upload: the multipart body is malformed ({exc})") from None
    if field.data is None:
        raise HTTPException(400, "upload: no form field `file`; send the photo as file=@photo.jpg")
    if not field.data:
        raise HTTPException(400, "upload: the file is empty")
    return bytes(field.data)


def decode_photo(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """RGB uint8 pixels, decoded as maskcls.imageio.read_rgb does (OpenCV, EXIF orientation applied),
    after the header says it is a photo of a sane size."""
    reason = truncation_of_bytes(data)
    if reason:
        raise HTTPException(400, f"upload: {reason}; the photo is damaged: send the whole file")
    try:
        # Pillow reads only the header here; it refuses far-too-large sizes itself (DecompressionBombError).
        with Image.open(io.BytesIO(data), formats=PIL_FORMATS) as probe:
            width, height = probe.size
    except Image.DecompressionBombError:
        raise HTTPException(413, f"upload: the image has more pixels than the {max_pixels / 1e6:g} MP limit") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct.error):
        raise HTTPException(415, "upload: not a JPEG, PNG, WebP or BMP image") from None
    if width * height > max_pixels:
        raise HTTPException(413, f"upload: {width}x{height} is {width * height / 1e6:.1f} MP, over the {max_pixels / 1e6:g} MP limit")
    if min(width, height) < MIN_FACE_PIXELS:  # no face the detector looks for fits, and its image pyramid would be empty
        raise HTTPException(400, f"upload: {width}x{height} is too small to hold a face; send a photo at least {MIN_FACE_PIXELS} px a side")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise HTTPException(400, "upload: the image cannot be decoded; it may be damaged")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def answer_photo(model, data: bytes, max_pixels: int) -> dict:
    """Decode and predict one upload; runs in a worker thread, so requests do not queue on it."""
    started = time.perf_counter()
    rgb = decode_photo(data, max_pixels)
    decode_ms = (time.perf_counter() - started) * 1000
    try:
        result = model.predict(rgb)
    except MaskclsError as exc:
        raise HTTPException(422, f"upload: {exc}") from None
    return {**result, "latency_ms": {"decode": decode_ms, **result["latency_ms"]},
            "image": {"width": int(rgb.shape[1]), "height": int(rgb.shape[0])}}


def create_app(model, max_upload_mb: float = 10, max_pixels: int = MAX_PIXELS, int8: bool | None = None,
               tta: str | None = None) -> FastAPI:
    """The service around `model`: a ServedModel, or a folder to load one from (`int8`, `tta`: see `ServedModel.load`)."""
    if not max_upload_mb > 0:
        raise MaskclsError(f"--max-upload-mb {max_upload_mb}: give a positive size in MB, e.g. 10")
    if isinstance(model, (str, Path)):
        from .model import ServedModel

        model = ServedModel.load(model, int8, tta)
    cap = int(max_upload_mb * MEGABYTE)
    # docs_url=None: FastAPI's own /docs loads Swagger UI from a CDN; ours serves it from swagger-ui-bundle.
    app = FastAPI(title="maskcls", version=str(model.info.get("model_id", "")), docs_url=None, redoc_url=None,
                  description="Face-mask, gender and age classes for every face in a photo.")
    app.state.model = model
    app.add_middleware(PageHeaders)

    @app.post("/predict", openapi_extra=PREDICT_BODY, summary="Classify every face in one photo")
    async def predict(request: Request) -> dict:
        started = time.perf_counter()
        data = await read_upload(request, cap)
        answer = await run_in_threadpool(answer_photo, model, data, max_pixels)
        answer["latency_ms"]["total"] = (time.perf_counter() - started) * 1000
        return answer

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    # The contract's info dict; ServedModel.describe() adds preprocessing, crop and labels to it.
    info = model.describe() if hasattr(model, "describe") else model.info

    @app.get("/version")
    def version() -> dict:
        return info

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/docs", include_in_schema=False)
    def docs():
        return get_swagger_ui_html(openapi_url="/openapi.json", title="maskcls API", swagger_js_url="/swagger/swagger-ui-bundle.js",
                                   swagger_css_url="/swagger/swagger-ui.css", swagger_favicon_url="/swagger/favicon-32x32.png")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount("/swagger", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="swagger")
    return app


def listen(host: str, port: int) -> socket.socket:
    """A bound socket, so a taken port is one line from the CLI rather than uvicorn's exit."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, kind, proto, _, address = infos[0]
        # With the protocol given, asyncio turns Nagle's algorithm off on each connection (it checks
        # for IPPROTO_TCP); without it, every answer waited out the client's delayed ACK.
        sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise MaskclsError(f"{host}:{port}: cannot listen there ({exc.strerror or exc}); choose another --port or --host") from None
    return sock


def prepare(model_dir, host: str = "127.0.0.1", port: int = 8000, max_upload_mb: float = 10, log_level: str = "info",
            int8: bool | None = None, tta: str | None = None):
    """Everything `serve` does before it blocks: load the model, listen, say where. Returns the
    uvicorn server and its socket; `server.run(sockets=[sock])` answers until `server.should_exit`."""
    import uvicorn

    app = create_app(model_dir, max_upload_mb, int8=int8, tta=tta)  # a bad model folder is one line before anything listens
    sock = listen(host, port)
    if host not in LOOPBACK:
        log.warning("listening on %s: the service has no authentication; anyone who can reach this address can use it", host)
    shown = f"[{host}]" if ":" in host else host
    info = app.state.model.info
    graphs = f"{info['backend']} {'int8' if info.get('int8') else 'fp32'}, tta {info['tta']}"
    print(f"maskcls serve: model {info.get('model_id')} ({graphs}) at http://{shown}:{sock.getsockname()[1]}/ "
          f"(API docs /docs, uploads up to {max_upload_mb:g} MB); Ctrl-C stops", flush=True)
    return uvicorn.Server(uvicorn.Config(app, log_level=log_level)), sock


def serve(model_dir, host: str = "127.0.0.1", port: int = 8000, max_upload_mb: float = 10, int8: bool | None = None,
          tta: str | None = None) -> None:
    """Load the model, then answer on http://HOST:PORT/ until interrupted (port 0: any free one, printed)."""
    server, sock = prepare(model_dir, host, port, max_upload_mb, int8=int8, tta=tta)
    server.run(sockets=[sock])
