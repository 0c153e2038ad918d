"""The OpenAPI 3.1 description of the HTTP API (served at /openapi.json, checked in as docs/openapi.json)."""

from __future__ import annotations

from .._version import __version__

_ERROR = {"description": "Bad input: one line saying what is wrong",
          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _query(name: str, description: str, required: bool = False, kind: str = "string") -> dict:
    return {"name": name, "in": "query", "required": required, "description": description, "schema": {"type": kind}}


def _ok(schema: str, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}


_SCHEMAS = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    "Health": {"type": "object", "required": ["schema_version", "status", "version"],
               "properties": {"schema_version": {"type": "integer"}, "status": {"type": "string"}, "version": {"type": "string"}}},
    "Lookup": {
        "type": "object", "required": ["schema_version", "template", "shape", "dtype", "level", "params"],
        "properties": {
            "schema_version": {"type": "integer"}, "template": {"type": "string"}, "shape": {"type": "string"},
            "dtype": {"type": "string"},
            "level": {"type": "string", "enum": ["exact", "nearest_shape", "family", "vendor", "shipped", "default"]},
            "params": {"type": "object", "additionalProperties": True},
            "time_s": {"type": ["number", "null"]}, "gflops": {"type": ["number", "null"]},
            "tuned_shape": {"type": ["string", "null"]}, "device_key": {"type": ["string", "null"]},
            "explain": {"type": "array", "items": {"type": "string"}}}},
    "Record": {
        "type": "object",
        "properties": {k: {"type": t} for k, t in (
            ("template", "string"), ("template_hash", "string"), ("dtype", "string"), ("shape", "string"),
            ("device_key", "string"), ("device_name", "string"), ("config", "object"), ("status", "string"),
            ("reason", "string"), ("time_s", ["number", "null"]), ("gflops", ["number", "null"]),
            ("gbps", ["number", "null"]), ("source", "string"), ("created_at", "string"))}},
    "Records": {"type": "object", "required": ["schema_version", "records"],
                "properties": {"schema_version": {"type": "integer"},
                               "records": {"type": "array", "items": {"$ref": "#/components/schemas/Record"}}}},
    "Best": {"type": "object", "required": ["schema_version", "template", "best"],
             "properties": {"schema_version": {"type": "integer"}, "template": {"type": "string"},
                            "best": {"type": "array", "items": {"type": "object"}}}},
    "Demand": {"type": "object", "required": ["schema_version", "demand"],
               "properties": {"schema_version": {"type": "integer"},
                              "demand": {"type": "array", "items": {"$ref": "#/components/schemas/Asked"}}}},
    "Asked": {
        "type": "object",
        "properties": {k: {"type": t} for k, t in (
            ("template", "string"), ("template_hash", "string"), ("dtype", "string"), ("shape", "string"),
            ("device_key", "string"), ("device_name", "string"), ("count", "integer"), ("first_seen", "string"),
            ("last_seen", "string"), ("tuned", "boolean"))}},
}


def document() -> dict:
    """The API's description, built from this module (no server needed)."""
    device = _query("device", "Device id (opencl:0:0) or fingerprint key; default: the server's default device")
    paths = {
        "/v1/health": {"get": {"summary": "Whether the server answers", "responses": {"200": _ok("Health", "Up")}}},
        "/v1/lookup": {"get": {
            "summary": "The best known config for a problem, with the level that answered (as tunesvc.lookup)",
            "parameters": [_query("template", "Template name", True), _query("shape", "Shape, e.g. 1024x1024x1024", True),
                           _query("dtype", "float32 (default) or float16"), device,
                           _query("explain", "1: say, level by level, why the ones above did not answer")],
            "responses": {"200": _ok("Lookup", "An answer, always (the template's default at worst)"),
                          "400": _ERROR, "404": _ERROR}}},
        "/v1/records": {"get": {
            "summary": "Stored measurements, fastest first per problem",
            "parameters": [_query("template", "Only this template"), _query("device", "Fingerprint key or name substring"),
                           _query("status", "ok, build, launch, runtime, wrong_result, ..."),
                           _query("limit", "At most this many (1 to 1000, default 100)", kind="integer")],
            "responses": {"200": _ok("Records", "Records"), "400": _ERROR}}},
        "/v1/best": {"get": {
            "summary": "The fastest config of each tuned shape of a template, per device and dtype",
            "parameters": [_query("template", "Template name", True), _query("device", "Fingerprint key or name substring"),
                           _query("dtype", "Only this dtype")],
            "responses": {"200": _ok("Best", "Best configs"), "400": _ERROR}}},
        "/v1/demand": {"get": {
            "summary": "What lookups asked for below the exact level and nobody tuned, most asked first "
                       "(as tunesvc demand)",
            "parameters": [_query("limit", "At most this many (1 to 1000, default 50)", kind="integer"),
                           _query("all", "1: also the problems tuned since they were asked for")],
            "responses": {"200": _ok("Demand", "Demand"), "400": _ERROR}}},
        "/metrics": {"get": {"summary": "Counters in Prometheus' text format",
                             "responses": {"200": {"description": "Metrics", "content": {"text/plain": {}}}}}},
        "/openapi.json": {"get": {"summary": "This description", "responses": {"200": {"description": "OpenAPI 3.1"}}}},
    }
    return {"openapi": "3.1.0",
            "info": {"title": "tunesvc", "version": __version__,
                     "description": "Tuned kernel configs for any language. Read-only unless the server has a token; "
                                    "writes then need 'Authorization: Bearer <token>'."},
            "paths": paths, "components": {"schemas": _SCHEMAS}}
