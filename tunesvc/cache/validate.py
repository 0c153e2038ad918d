"""Untrusted tuning files, line by line: bounded reading and per-record validation.

Every check happens before the expensive or dangerous step it guards: the
line length before decoding, the bracket count before ``json.loads`` (so
neither a 100 MB line nor 10^5 nested brackets ever reaches the parser), and
the template registry before anything is written. Nothing is evaluated, and
values reach SQL only as bound parameters.
"""

from __future__ import annotations

import json
import math
import re
from operator import itemgetter
from dataclasses import dataclass, field
from datetime import datetime

from .. import templates
from ..errors import TunesvcError, UsageError, clip  # noqa: F401  (clip: exchange's too)
from ..types import STATUSES, Fingerprint, shape_str
from .schema import DEVICE, EXPORT_FIELDS, MEASURED, PROBLEM, TIMES

try:  # 3-5x faster than json.loads; only ever trusted where its answer equals the strict parser's (fast_parse)
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - orjson is a dependency; the stdlib parser is the same contract, slower
    _fast_loads = json.loads  # type: ignore[assignment]  # the same contract on str and bytes

#: the longest line read; a record is a few hundred bytes, a long build log a few KiB
MAX_LINE = 64 * 1024
#: ``{`` and ``[`` a record may hold outside strings (the record and its config)
MAX_BRACKETS = 8
MAX_NAME = 200  # device fields, source, versions
MAX_REASON = 4096
MAX_SECONDS = 1e6  # a kernel time above ~11 days is not a measurement
MAX_RATE = 1e9  # GFLOP/s and GB/s ceilings far beyond any device
MAX_RUNS = 10**9

DEVICE_TYPES = ("gpu", "cpu", "accelerator", "other")
FIELDS = EXPORT_FIELDS  # every field of a record line, no more, no fewer
_FIELD_SET = frozenset(FIELDS)
_HASH = re.compile(r"[0-9a-f]{16}\Z")
_IDENT = re.compile(r"[a-z][a-z0-9_]{0,31}\Z")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f|\ud800-\udfff]")
#: what a name may not hold: control characters (C0, DEL, C1) and lone surrogates (not text: SQLite
#: cannot store one, and it stopped whole imports)
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
#: the shortest line that can hold a record: every field's key in quotes, a colon, a one-character
#: value and a separator (escapes and white space only make it longer)
MIN_LINE = 1 + sum(len(f) + 5 for f in EXPORT_FIELDS)
_MEMO_MAX = 100_000  # entries of one memo: a hostile file's distinct values must not grow it without bound


def _remember(memo: dict, key, value):
    if len(memo) >= _MEMO_MAX:
        memo.clear()
    memo[key] = value
    return value


class Rejected(TunesvcError):
    """One record of a file is invalid; the message is the reason."""


@dataclass
class Checks:
    """Memo of checks that repeat across records (templates, configs, shapes, devices)."""

    configs: dict = field(default_factory=dict)
    shapes: dict = field(default_factory=dict)
    names: dict = field(default_factory=dict)
    devices: dict = field(default_factory=dict)
    templates: dict = field(default_factory=dict)
    contexts: dict = field(default_factory=dict)  # the repeated string fields of a record -> (template, row part)
    times: set = field(default_factory=set)  # created_at values already checked


# ---- lines -------------------------------------------------------------------------------
_BLOCK = 1 << 20


def read_raw_lines(stream, max_line: int = MAX_LINE):
    """Yield (line number, bytes without the newline, or Rejected) from a binary stream read in
    1 MiB blocks, never holding more than one block and ``max_line`` bytes of one line."""
    number, carry, overlong = 0, b"", False
    while block := stream.read(_BLOCK):
        parts = (carry + block).split(b"\n")
        carry = parts.pop()
        for raw in parts:
            number += 1
            if overlong:  # the end of a line already rejected
                overlong = False
            elif len(raw) > max_line:
                yield number, Rejected(f"line longer than {max_line} bytes")
            else:
                yield number, raw
        if len(carry) > max_line:  # drop an overlong line as it arrives, without keeping it
            if not overlong:
                yield number + 1, Rejected(f"line longer than {max_line} bytes")
            overlong, carry = True, b""
    if carry and not overlong:  # a last line without its newline
        yield number + 1, carry


def decode(raw: bytes) -> str | Rejected:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return Rejected("not UTF-8 text")


def _no_duplicates(pairs):
    d = dict(pairs)
    if len(d) != len(pairs):
        seen = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise Rejected(f"duplicate key {dup[:40]!r}")
    return d


def _no_constant(name):
    raise Rejected(f"non-finite number {name} (NaN and infinities are not allowed)")


_decoder = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constant)


def parse_line(text: str) -> dict:
    """One JSON object from one line, with the bounds checked first; raise Rejected."""
    if text.count("{") + text.count("[") > MAX_BRACKETS:
        # brackets inside strings (a build log) are harmless: count only the structural ones
        bare = _STRING.sub("", text)
        if bare.count("{") + bare.count("[") > MAX_BRACKETS:
            raise Rejected(f"more than {MAX_BRACKETS} nested objects or arrays")
    try:
        obj = _decoder.decode(text)
    except Rejected:
        raise
    except (ValueError, RecursionError) as e:
        raise Rejected(f"not valid JSON ({str(e).split(':')[0][:80]}; truncated or corrupt?)") from None
    if not isinstance(obj, dict):
        raise Rejected(f"a record must be a JSON object, not {type(obj).__name__}")
    return obj


def fast_parse(raw: bytes) -> dict | None:
    """The object of one line when a fast parser's answer is provably the strict one, else None (and the
    caller takes the strict path, which also words any rejection). Proof: without a backslash every '"'
    delimits a string, so each key is a string followed by ':' and the count of '":' is at least the
    number of keys; if it equals the number of distinct keys parsed, no key was repeated. NaN, infinities,
    control characters and invalid UTF-8 make the fast parser fail; brackets are bounded first."""
    if b"\\" in raw or raw.count(b"{") + raw.count(b"[") > MAX_BRACKETS:
        return None
    try:
        obj = _fast_loads(raw)
    except ValueError:  # orjson.JSONDecodeError is a ValueError
        return None
    if type(obj) is not dict:
        return None
    config = obj.get("config")
    keys = len(obj) + (len(config) if type(config) is dict else 0)
    return obj if raw.count(b'":') == keys else None


# ---- fields ------------------------------------------------------------------------------
def _text(obj: dict, key: str, limit: int = MAX_NAME, empty: bool = True) -> str:
    v = obj[key]
    if type(v) is not str:
        raise Rejected(f"{key} must be a string, not {type(v).__name__}")
    if len(v) > limit:
        raise Rejected(f"{key} longer than {limit} characters")
    if not empty and not v:
        raise Rejected(f"{key} is empty")
    if not v.isascii() and _SURROGATE.search(v):
        raise Rejected(f"{key} holds a lone surrogate (an escape in \\ud800-\\udfff), which is not text")
    return v


def _name(obj: dict, key: str, memo: dict) -> str:
    """A device or provenance field: bounded, printable, without the key separator '|'."""
    v = obj[key]
    hit = memo.get((key, v)) if type(v) is str else None
    if hit is not None:
        return hit
    v = _text(obj, key)
    if _CONTROL.search(v):
        raise Rejected(f"{key} contains a control character or '|'")
    return _remember(memo, (key, v), v)


def _number(obj: dict, key: str, low: float, high: float, *, integer: bool = False, optional: bool = True):
    v = obj[key]
    kind = type(v)
    if kind is float and not integer and low <= v <= high:  # the common case first; NaN fails the comparison
        return v
    if kind is int and low <= v <= high:
        return v if integer else float(v)
    if v is None and optional:
        return None
    if type(v) is bool or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
        raise Rejected(f"{key} must be {'an integer' if integer else 'a number'}, not {type(v).__name__}")
    if isinstance(v, float) and not math.isfinite(v):
        raise Rejected(f"{key} is not finite")
    if not low <= v <= high:
        raise Rejected(f"{key}={v!r:.40} is outside [{low:g}, {high:g}]")
    return float(v) if not integer else v


def _timestamp(obj: dict, key: str) -> str:
    v = _text(obj, key, 64, empty=False)
    try:
        datetime.fromisoformat(v)
    except ValueError:
        raise Rejected(f"{key} {v[:40]!r} is not an ISO 8601 time") from None
    return v


def _template_part(obj: dict, checks: Checks):
    """(template, canonical shape, canonical config JSON), validated by the registry."""
    try:
        tpl = checks.templates.get((obj["template"], obj["dtype"]))
    except TypeError:  # unhashable values: the slow path says what is wrong
        tpl = None
    if tpl is None:
        try:
            tpl = _template(obj)
        except Rejected as e:  # remembered too: a file of a template not registered here repeats it per record
            tpl = e
        if type(obj["template"]) is str and type(obj["dtype"]) is str:
            _remember(checks.templates, (obj["template"], obj["dtype"]), tpl)
    if isinstance(tpl, Rejected):
        raise Rejected(str(tpl))
    return tpl, _shape(tpl, obj, checks), _config(tpl, obj, checks)


def _template(obj: dict):
    name = _text(obj, "template", 100, empty=False)
    try:
        tpl = templates.get(name) if not name.endswith(".py") else None
    except UsageError:
        tpl = None
    if tpl is None:
        raise Rejected(f"unknown template {name[:60]!r}")
    dtype = _text(obj, "dtype", 32)
    try:
        tpl.check_dtype(dtype)
    except UsageError as e:
        raise Rejected(str(e)) from None
    return tpl


def _shape(tpl, obj: dict, checks: Checks) -> str:
    text = _text(obj, "shape", 64, empty=False)
    key = (tpl.name, text)
    hit = checks.shapes.get(key)
    if hit is None:
        try:
            hit = _remember(checks.shapes, key, shape_str(tpl.parse_shape(text)))
        except UsageError as e:
            raise Rejected(str(e)) from None
    return hit


def _config(tpl, obj: dict, checks: Checks) -> str:
    values = obj["config"]
    if not isinstance(values, dict):
        raise Rejected(f"config must be an object of parameter values, not {type(values).__name__}")
    # the types belong to the key: 8.0 == 8 and True == 1 in Python, but only 8 is valid
    key: tuple | None = (tpl.name, tuple(values.items()), tuple(map(type, values.values())))
    try:
        hit = checks.configs.get(key)
    except TypeError:  # a nested value: not cacheable, and check_config will reject it
        hit, key = None, None
    if hit is not None:
        return hit
    try:
        config = tpl.check_config(values)
    except UsageError as e:
        raise Rejected(str(e)) from None
    for p in tpl.params:  # 8.0 == 8 in Python: insist on the parameter's own type, so keys stay canonical
        v = values[p.name]
        if type(v) is not type(next(x for x in p.values if x == v)):
            raise Rejected(f"{tpl.name}: {p.name}={v!r} has the wrong type")
    if key is not None:
        _remember(checks.configs, key, config.key)
    return config.key


def _measurement(obj: dict) -> tuple:
    status = obj["status"]
    if status not in STATUSES:
        raise Rejected(f"status {str(status)[:40]!r} is not one of {list(STATUSES)}")
    reason = _text(obj, "reason", MAX_REASON)
    times = tuple(_number(obj, k, 1e-15, MAX_SECONDS) for k in TIMES)
    iqr = _number(obj, "time_iqr", 0.0, MAX_SECONDS)
    runs = _number(obj, "runs", 0, MAX_RUNS, integer=True, optional=False)
    rates = (_number(obj, "gflops", 0.0, MAX_RATE), _number(obj, "gbps", 0.0, MAX_RATE))
    compile_s = _number(obj, "compile_seconds", 0.0, MAX_SECONDS, optional=False)
    if status == "ok":
        if None in times or runs < 1:
            raise Rejected("an ok record needs time_median, time_min, time_max and runs >= 1")
        if not times[1] <= times[0] <= times[2]:
            raise Rejected("times must satisfy time_min <= time_median <= time_max")
    elif any(t is not None for t in times):
        raise Rejected(f"a failed record ({status}) has no times")
    return (status, reason) + times + (iqr, runs) + rates + (compile_s,)


def _few(names) -> str:
    names = sorted(names)
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _device(obj: dict, checks: Checks) -> tuple:
    backend = _name(obj, "backend", checks.names)
    if not _IDENT.match(backend):
        raise Rejected(f"backend {backend[:40]!r} is not a backend name")
    device_type = obj["device_type"]
    if device_type not in DEVICE_TYPES:
        raise Rejected(f"device_type must be one of {list(DEVICE_TYPES)}")
    return (backend, _name(obj, "vendor", checks.names), device_type, _name(obj, "architecture", checks.names),
            _name(obj, "device_name", checks.names), _name(obj, "driver", checks.names))


_CONTEXT = itemgetter("template", "dtype", "shape", "template_hash", *DEVICE, "tunesvc_version")
_MEASURED = itemgetter(*MEASURED)
_MAX_CONTEXTS = 100_000


def validate(obj: dict, checks: Checks) -> dict:
    """A database row (column -> value) for one record, or raise Rejected with the reason.

    The fields that repeat across records (template, shape, device, versions) are checked once per
    distinct combination and the config once per distinct config (memos in ``checks``); the
    measurement and the time of every record are checked each time. A memo hit needs equal strings,
    and a str equals only a str, so it stands for exactly the checks that passed."""
    try:
        context = checks.contexts.get(_CONTEXT(obj))
    except (KeyError, TypeError):  # a missing field or an unhashable value: the full checks say what
        context = None
    if context is None or len(obj) != len(FIELDS) or obj.keys() != _FIELD_SET:
        row = _validate(obj, checks)
        if len(checks.contexts) < _MAX_CONTEXTS:
            checks.contexts[_CONTEXT(obj)] = (checks.templates[(obj["template"], obj["dtype"])],
                                              {k: row[k] for k in _CONTEXT_COLUMNS})
            checks.times.add(row["created_at"])
        return row
    tpl, row = context
    row = row.copy()
    row["config"] = _config(tpl, obj, checks)  # the same order of checks as _validate
    row.update(zip(MEASURED, _measured(obj)))
    created = obj["created_at"]
    row["created_at"] = created if type(created) is str and created in checks.times else _timestamp(obj, "created_at")
    if len(checks.times) < _MAX_CONTEXTS:
        checks.times.add(created)
    return row


_CONTEXT_COLUMNS = ("device_key", *DEVICE, *PROBLEM, "tunesvc_version")  # the columns a memo hit gives at once


def _measured(obj: dict) -> tuple:
    """_measurement's answer, checked inline for the common record (ok, float times, int runs)."""
    status, reason, t_med, t_min, t_max, iqr, runs, gflops, gbps, compile_s = values = _MEASURED(obj)
    if (status == "ok" and type(reason) is str and len(reason) <= MAX_REASON
            and (reason.isascii() or not _SURROGATE.search(reason))
            and type(t_med) is float and type(t_min) is float and type(t_max) is float
            and 1e-15 <= t_min <= t_med <= t_max <= MAX_SECONDS
            and type(runs) is int and 1 <= runs <= MAX_RUNS
            and _plain(iqr, MAX_SECONDS) and _plain(gflops, MAX_RATE) and _plain(gbps, MAX_RATE)
            and type(compile_s) is float and 0.0 <= compile_s <= MAX_SECONDS):
        return values
    return _measurement(obj)


def _plain(v, high: float) -> bool:
    """A float in [0, high] or None: what _number returns unchanged."""
    return v is None or (type(v) is float and 0.0 <= v <= high)


def _validate(obj: dict, checks: Checks) -> dict:
    """A database row (column -> value) for one record, or raise Rejected with the reason."""
    keys = obj.keys()
    if keys != _FIELD_SET:
        missing, unknown = _FIELD_SET - keys, keys - _FIELD_SET
        raise Rejected((f"missing field(s) {_few(missing)}" if missing else "")
                       + ("; " if missing and unknown else "")
                       + (f"unknown field(s) {_few(str(k)[:40] for k in unknown)}" if unknown else ""))
    tpl, shape, config = _template_part(obj, checks)
    template_hash = _text(obj, "template_hash", 16)
    if not _HASH.match(template_hash):
        raise Rejected("template_hash must be 16 lowercase hex digits")
    raw = tuple(obj[k] for k in DEVICE)
    try:
        device = checks.devices.get(raw)
    except TypeError:  # unhashable values: the slow path says what is wrong
        device = None
    if device is None:
        device = _remember(checks.devices, raw, _device(obj, checks))
    measured = _measurement(obj)
    return {
        "device_key": Fingerprint(*device).key, **dict(zip(DEVICE, device)),
        "template": tpl.name, "template_hash": template_hash, "dtype": obj["dtype"], "shape": shape, "config": config,
        **dict(zip(MEASURED, measured)),
        "created_at": _timestamp(obj, "created_at"), "tunesvc_version": _name(obj, "tunesvc_version", checks.names),
    }
