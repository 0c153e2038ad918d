"""The HTTP API: the same lookups and records as the library, as JSON, for any language.

A thin layer (Starlette on uvicorn): each route checks its input at the edge, calls the same
library function as the CLI, and answers JSON. Input errors are 4xx with ``{"error": ...}``,
never a traceback. Lookups run in the event loop itself: a warm one costs microseconds, less
than a hop to a thread pool.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import time
from dataclasses import dataclass, field

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .._version import __version__
from ..errors import StoreError, TunesvcError, UnknownTemplateError, UsageError

SCHEMA_VERSION = 1
MAX_QUERY = 4096  # bytes of a query string
MAX_BODY = 64 * 1024  # bytes of a request body
MAX_FIELD = 512  # characters of one query field
MAX_RECORDS = 1000  # rows of one /v1/records answer
JSON = "application/json"


class HTTPError(Exception):
    """An answer other than 200: its status and one line saying what is wrong."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _json(data, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type=JSON)


def _field(request: Request, name: str, required: bool = False, default: str | None = None) -> str | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        if required:
            raise HTTPError(400, f"query parameter {name!r} is required")
        return default
    if len(value) > MAX_FIELD:
        raise HTTPError(400, f"query parameter {name!r} is longer than {MAX_FIELD} characters")
    return value


def _number(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = _field(request, name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise HTTPError(400, f"query parameter {name!r} must be a whole number, got {text[:40]!r}") from None
    if not low <= value <= high:
        raise HTTPError(400, f"query parameter {name!r} must be from {low} to {high}, got {value}")
    return value


@dataclass
class Metrics:
    """Counters for /metrics (Prometheus text format), kept in the process."""

    requests: dict = field(default_factory=dict)  # (route, status) -> count
    seconds: dict = field(default_factory=dict)  # route -> total seconds
    levels: dict = field(default_factory=dict)  # lookup level -> count
    started: float = field(default_factory=time.time)

    def count(self, route: str, status: int, seconds: float) -> None:
        key = (route, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        self.seconds[route] = self.seconds.get(route, 0.0) + seconds

    def text(self) -> str:
        lines = ["# HELP tunesvc_requests_total HTTP requests answered, by route and status.",
                 "# TYPE tunesvc_requests_total counter"]
        lines += [f'tunesvc_requests_total{{route="{r}",status="{s}"}} {n}' for (r, s), n in sorted(self.requests.items())]
        lines += ["# HELP tunesvc_request_seconds_total Seconds spent answering, by route.",
                  "# TYPE tunesvc_request_seconds_total counter"]
        lines += [f'tunesvc_request_seconds_total{{route="{r}"}} {v:.6f}' for r, v in sorted(self.seconds.items())]
        lines += ["# HELP tunesvc_lookups_total Lookups answered, by the level that answered.",
                  "# TYPE tunesvc_lookups_total counter"]
        lines += [f'tunesvc_lookups_total{{level="{k}"}} {v}' for k, v in sorted(self.levels.items())]
        lines += ["# HELP tunesvc_uptime_seconds Seconds since the server started.", "# TYPE tunesvc_uptime_seconds gauge",
                  f"tunesvc_uptime_seconds {time.time() - self.started:.1f}"]
        return "\n".join(lines) + "\n"


def lookup_answer(result, explain: bool) -> dict:
    """A LookupResult as JSON: the same fields as ``tunesvc lookup --json``, units in the names."""
    from ..types import shape_str

    out = {"schema_version": SCHEMA_VERSION, "template": result.template, "shape": shape_str(result.shape),
           "dtype": result.dtype, "level": result.level, "params": result.params, "time_s": result.time,
           "gflops": result.gflops, "tuned_shape": shape_str(result.tuned_shape) if result.tuned_shape else None,
           "device_key": result.device_key}
    if explain:
        out["explain"] = list(result.explain)
    return out


class Service:
    """The routes, over one tuning database (``db``; None: the default one)."""

    def __init__(self, db=None, token: str | None = None):
        from ..settings import db_path

        db_path(db)  # a --db no store takes (a server URL) is refused at start, not on every request
        self.db, self.token, self.metrics = db, token, Metrics()
        # A warm lookup returns the very LookupResult it returned before: its JSON is kept with it,
        # so a repeated request costs the lookup's dict hit and no encoding.
        self._encoded: dict = {}
        self._queries: dict[bytes, tuple] = {}  # raw query string -> the lookup's checked fields

    # ---- plumbing ---------------------------------------------------------------------------
    def route(self, name: str, handler, writes: bool = False):
        async def endpoint(request: Request) -> Response:
            start = time.perf_counter()
            try:
                if len(request.scope.get("query_string", b"")) > MAX_QUERY:  # bytes, as sent; no URL object built
                    raise HTTPError(414, f"query string longer than {MAX_QUERY} bytes")
                if writes:
                    self._authorise(request)
                response = await handler(request)
            except HTTPError as e:
                response = _json({"error": str(e)}, e.status)
            except UnknownTemplateError as e:
                response = _json({"error": str(e)}, 404)
            except (UsageError, StoreError) as e:
                response = _json({"error": str(e)}, 400)
            except TunesvcError as e:
                response = _json({"error": str(e)}, 500)
            self.metrics.count(name, response.status_code, time.perf_counter() - start)
            return response

        return endpoint

    def _authorise(self, request: Request) -> None:
        if self.token is None:
            raise HTTPError(403, "this server is read-only: start it with a token (TUNESVC_TOKEN or --token-file) to accept writes")
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
            raise HTTPError(401, "writes need 'Authorization: Bearer <token>'")

    async def body(self, request: Request) -> dict:
        """The JSON object of a request body, at most MAX_BODY bytes."""
        size = request.headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > MAX_BODY):
            raise HTTPError(413, f"request body larger than {MAX_BODY} bytes")
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY:
                raise HTTPError(413, f"request body larger than {MAX_BODY} bytes")
        try:
            data = json.loads(raw or b"{}")
        except ValueError as e:
            raise HTTPError(400, f"request body is not JSON: {e}") from None
        if not isinstance(data, dict):
            raise HTTPError(400, "request body must be a JSON object")
        return data

    # ---- read routes ------------------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        return _json({"schema_version": SCHEMA_VERSION, "status": "ok", "version": __version__})

    async def lookup(self, request: Request) -> Response:
        # A framework asks the same few questions over and over: the parsed and checked fields of a
        # query string are kept by its raw bytes, so a repeated one skips parsing (about half of a
        # warm request's time in the handler, measured with benchmarks/serve.py).
        raw = request.scope.get("query_string", b"")
        fields = self._queries.get(raw)
        if fields is None:
            fields = (_field(request, "template", required=True), _field(request, "shape", required=True),
                      _field(request, "dtype", default="float32") or "float32", _field(request, "device"),
                      _field(request, "explain", default="0") not in ("0", "false", "no"))
            if len(self._queries) > 4096:
                self._queries.clear()
            self._queries[raw] = fields
        return Response(self._answer(fields), media_type=JSON)

    def _answer(self, fields: tuple) -> bytes:
        """The encoded answer to checked lookup fields; a warm lookup returns the very LookupResult it
        returned before, so its JSON is kept with it and a repeated request costs no encoding."""
        from ..lookup import lookup

        template, shape, dtype, device, explain = fields
        result = lookup(template, shape, dtype, device, self.db)
        self.metrics.levels[result.level] = self.metrics.levels.get(result.level, 0) + 1
        key = (id(result), explain)
        hit = self._encoded.get(key)
        if hit is None or hit[0] is not result:
            if len(self._encoded) > 4096:
                self._encoded.clear()
            hit = self._encoded[key] = (result, orjson.dumps(lookup_answer(result, explain)))
        return hit[1]

    def fast_lookup(self, raw: bytes) -> bytes | None:
        """The answer for a query string checked before, or None: a new one, or a lookup that raises,
        goes the full route, which answers errors as every route does."""
        fields = self._queries.get(raw)
        if fields is None:
            return None
        start = time.perf_counter()
        try:
            body = self._answer(fields)
        except TunesvcError:
            return None
        self.metrics.count("lookup", 200, time.perf_counter() - start)
        return body

    async def records(self, request: Request) -> Response:
        from ..cache import Store
        from ..types import shape_str

        limit = _number(request, "limit", 100, 1, MAX_RECORDS)
        template, device, status = _field(request, "template"), _field(request, "device"), _field(request, "status")
        store = Store(self.db, readonly=True)
        try:
            rows = []
            for r in store.records(template, device, status):
                m = r.measurement
                rows.append({"template": r.template, "template_hash": r.template_hash, "dtype": r.dtype,
                             "shape": shape_str(r.shape), "device_key": r.fingerprint.key, "device_name": r.fingerprint.name,
                             **m.to_dict(), "source": r.source, "created_at": r.created_at})
                if len(rows) >= limit:
                    break
        finally:
            store.close()
        return _json({"schema_version": SCHEMA_VERSION, "records": rows})

    async def best(self, request: Request) -> Response:
        """The fastest ok config of each tuned shape of a template (optionally on one device, one dtype)."""
        from ..cache import Store
        from ..types import shape_str

        template = _field(request, "template", required=True)
        device, dtype = _field(request, "device"), _field(request, "dtype")
        store = Store(self.db, readonly=True)
        try:
            best: dict = {}
            for r in store.records(template, device, "ok"):
                if dtype and r.dtype != dtype:
                    continue
                key = (r.fingerprint.key, r.dtype, r.shape)
                if key not in best or r.measurement.time < best[key].measurement.time:
                    best[key] = r
        finally:
            store.close()
        rows = [{"device_key": k[0], "device_name": r.fingerprint.name, "dtype": k[1], "shape": shape_str(k[2]),
                 "config": dict(r.measurement.config), "time_s": r.measurement.time, "gflops": r.measurement.gflops}
                for k, r in sorted(best.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2]))]
        return _json({"schema_version": SCHEMA_VERSION, "template": template, "best": rows})

    async def demand(self, request: Request) -> Response:
        """What lookups asked for and nobody tuned, most asked first (as ``tunesvc demand``)."""
        from ..cache.demand import listing

        limit = _number(request, "limit", 50, 1, MAX_RECORDS)
        include_tuned = _field(request, "all", default="0") not in ("0", "false", "no")
        rows = [dict(vars(d), device_name=d.device_name) for d in listing(self.db, limit, include_tuned)]
        return _json({"schema_version": SCHEMA_VERSION, "demand": rows})

    async def metrics_text(self, request: Request) -> Response:
        return Response(self.metrics.text(), media_type="text/plain; version=0.0.4")

    async def openapi(self, request: Request) -> Response:
        from .openapi import document

        return _json(document())


def create_app(db=None, token: str | None = None, extra_routes=()) -> "FastLookup":
    """The ASGI app over the tuning database ``db``; writes need ``token`` (none: read-only)."""
    s = Service(db, token)
    routes = [
        Route("/v1/health", s.route("health", s.health)),
        Route("/v1/lookup", s.route("lookup", s.lookup)),
        Route("/v1/records", s.route("records", s.records)),
        Route("/v1/best", s.route("best", s.best)),
        Route("/v1/demand", s.route("demand", s.demand)),
        Route("/metrics", s.route("metrics", s.metrics_text)),
        Route("/openapi.json", s.route("openapi", s.openapi)),
    ]
    for path, name, method, handler, writes in extra_routes:
        routes.append(Route(path, s.route(name, lambda request, h=handler: h(s, request), writes=writes), methods=[method]))
    app = Starlette(routes=routes, exception_handlers={404: _not_found, 405: _not_allowed}, lifespan=_lifespan)
    app.state.service = s
    return FastLookup(app, s)


class FastLookup:
    """The ASGI app: a repeated ``GET /v1/lookup`` whose query string was seen and checked before
    is answered here, before Starlette's middleware, router and Request object (about half of a warm
    request's time, benchmarks/serve.py); everything else, and any lookup that raises, goes to the
    Starlette app, which answers errors as every route does."""

    def __init__(self, app: Starlette, service: Service):
        self.app, self.service, self.state = app, service, app.state

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/lookup" and scope["method"] == "GET":
            body = self.service.fast_lookup(scope.get("query_string", b""))
            if body is not None:
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", JSON.encode()), (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


@contextlib.asynccontextmanager
async def _lifespan(app):
    yield
    # uvicorn ends a SIGTERM'd server by raising the signal again, so no atexit handler runs: the
    # demand its lookups counted is written here
    from ..cache.demand import flush

    flush()


async def _not_found(request: Request, exc) -> Response:
    return _json({"error": f"no route {request.url.path!r}; see /openapi.json"}, 404)


async def _not_allowed(request: Request, exc) -> Response:
    return _json({"error": f"{request.method} is not allowed on {request.url.path!r}"}, 405)
