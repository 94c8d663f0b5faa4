"""Traffic sources: what the load sends. Pure (numpy, json, sqlite3 read-only); no Locust.

A source is a JSON-able dict with a `type`:

    {"type": "synthetic"}                                 the demo model's rows (the default)
    {"type": "synthetic", "features": [FEATURE, ...]}     rows drawn from a feature schema
    {"type": "synthetic", "layout": "tensor"}             one [rows, features] input instead
    {"type": "file", "path": "requests.jsonl"}            recorded requests, JSON lines
    {"type": "file", "path": "runs/x/capture.db"}         recorded requests, a Shadowline capture

Synthetic. A FEATURE is `{"name", "type": "float" | "int" | "category", ...}` with

- float / int: `min` and `max` (uniform; int: whole numbers, both ends included), or `mean`
  and `std` (normal; int: rounded), optionally clipped to `min` and/or `max`;
- category: `categories` (non-empty list of strings), optional `weights` (same length);
- `missing`: the share of values sent as null (default 0);
- `datatype`: the v2 tensor type; float FP32 (default), FP16 or FP64; int INT64 (default),
  INT32, INT16, INT8 or UINT8..UINT64; category always BYTES (the values are strings).

Each request is an Open Inference Protocol v2 infer request with one input per feature,
shape [rows_per_request] (`layout` "named", the default), or, with `layout` "tensor", a single
input named "features" of shape [rows_per_request, len(features)], rows in order, numeric
features only (FP64 if any feature is FP64, else FP32). Values are drawn from the user's
seeded generator in schema order (per feature: the values, then, when `missing` > 0, the null
mask), so a user's stream is a pure function of (seed, worker, user). FP32 values are sent in the shortest text that reads back
as the same float32 (0.1, not 0.10000000149011612). Without `features` the source is the demo
model's rows (`harness.demo_model.synthetic_rows`), the bodies the load has always sent.

File. `format` is "jsonl" or "capture" (default: a file starting with SQLite's header is a
capture, anything else JSON lines); `limit` keeps only the first N requests.

- JSON lines: one request per line (blank lines skipped). A line is either the request body
  itself, sent byte for byte as it stands on the line (surrounding whitespace aside), or a
  wrapper `{"body": ..., "path": ..., "method": ..., "headers": {...}}` (only those keys,
  `body` required): a string body is sent as its UTF-8 text, any other JSON value as compact
  JSON. `method` defaults to POST.
- capture: `method`, `route` and `request_body` of the `exchanges` table in `seq` order, read
  through a read-only SQLite connection (safe while a proxy still writes it). A capture of the
  gRPC proxy (method `GRPC`, route the method path) is replayed only by a gRPC load, and a gRPC
  load replays nothing else (`check_replay_protocol`).

The request path is the recorded one (path and query only: the host of an absolute URL is
dropped, the load always goes to the LoadSpec's target), else /v2/models/{model}/infer.
Recorded headers are kept except hop-by-hop ones, host, content-length and x-request-id
(the load sets its own). Requests are replayed in recorded order and cycled: with a pool of
U users, user i replays `records[i::U]` over and over, so the slices are disjoint (with
fewer records than users, users share records: user i takes `records[i % n]`), each user's
stream is deterministic, and the users' phased sends keep the overall order close to the
recording.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from harness.demo_model import FEATURES, synthetic_rows
from harness.records import GRPC_METHOD

SOURCE_TYPES = ("synthetic", "file")
FEATURE_TYPES = ("float", "int", "category")
FILE_FORMATS = ("jsonl", "capture")
LAYOUTS = ("named", "tensor")
TENSOR_INPUT = "features"  # the single [N, F] input of the tensor layout (as the demo server names it)
DATATYPES = {
    "float": ("FP32", "FP16", "FP64"),  # the first is the default
    "int": ("INT64", "INT32", "INT16", "INT8", "UINT8", "UINT16", "UINT32", "UINT64"),
    "category": ("BYTES",),
}
_FEATURE_KEYS = {"name", "type", "min", "max", "mean", "std", "categories", "weights", "missing", "datatype"}
_WRAPPER_KEYS = {"body", "path", "method", "headers"}
# Never replayed: they describe the recorded connection, not the request.
DROPPED_HEADERS = frozenset({
    "host", "content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer",
    "upgrade", "proxy-connection", "proxy-authorization", "proxy-authenticate", "x-request-id",
})
_SQLITE_MAGIC = b"SQLite format 3\x00"
_METHOD_RE = re.compile(r"[A-Z]{1,16}")
_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP header name


# -- validation ---------------------------------------------------------------------------


def _num(value, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{field} must be a finite number, got {value!r}")
    return float(value)


def validate_features(features, field: str = "source.features") -> list[dict]:
    """A checked copy of a feature schema; ValueError naming the bad field."""
    if not isinstance(features, (list, tuple)) or not features:
        raise ValueError(f"{field} must be a non-empty list of features")
    out, names = [], set()
    for i, feat in enumerate(features):
        where = f"{field}[{i}]"
        if not isinstance(feat, Mapping):
            raise ValueError(f"{where} must be a mapping with name and type, got {feat!r}")
        unknown = sorted(set(feat) - _FEATURE_KEYS)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}")
        name = feat.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}.name must be a non-empty string, got {name!r}")
        if name in names:
            raise ValueError(f"{where}.name {name!r} is used twice")
        names.add(name)
        where = f"{field}[{i}] ({name})"
        kind = feat.get("type")
        if kind not in FEATURE_TYPES:
            raise ValueError(f"{where}.type must be one of {', '.join(FEATURE_TYPES)}, got {kind!r}")
        f: dict = {"name": name, "type": kind}
        datatype = feat.get("datatype", DATATYPES[kind][0])
        if datatype not in DATATYPES[kind]:
            raise ValueError(f"{where}.datatype must be one of {', '.join(DATATYPES[kind])} for a {kind}, got {datatype!r}")
        f["datatype"] = datatype
        missing = _num(feat.get("missing", 0.0), f"{where}.missing")
        if not 0 <= missing <= 1:
            raise ValueError(f"{where}.missing must be a rate in [0, 1], got {missing!r}")
        f["missing"] = missing
        if kind == "category":
            wrong = sorted({"min", "max", "mean", "std"} & set(feat))
            if wrong:
                raise ValueError(f"{where}: a category feature takes categories (and weights), not {', '.join(wrong)}")
            cats = feat.get("categories")
            if not isinstance(cats, (list, tuple)) or not cats or not all(isinstance(c, str) for c in cats):
                raise ValueError(f"{where}.categories must be a non-empty list of strings, got {cats!r}")
            if len(set(cats)) != len(cats):
                raise ValueError(f"{where}.categories has duplicates: {list(cats)}")
            f["categories"] = list(cats)
            if "weights" in feat:
                w = feat["weights"]
                if not isinstance(w, (list, tuple)) or len(w) != len(cats):
                    raise ValueError(f"{where}.weights must be a list of {len(cats)} numbers, one per category")
                w = [_num(x, f"{where}.weights[{j}]") for j, x in enumerate(w)]
                if min(w) < 0 or sum(w) <= 0:
                    raise ValueError(f"{where}.weights must be >= 0 with a positive sum, got {w}")
                f["weights"] = w
            out.append(f)
            continue
        wrong = sorted({"categories", "weights"} & set(feat))
        if wrong:
            raise ValueError(f"{where}: a {kind} feature takes min/max or mean/std, not {', '.join(wrong)}")
        for key in ("min", "max", "mean", "std"):
            if key in feat:
                f[key] = _num(feat[key], f"{where}.{key}")
        if ("mean" in f) != ("std" in f):
            raise ValueError(f"{where}: give mean and std together")
        if "mean" not in f and not ("min" in f and "max" in f):
            raise ValueError(f"{where}: a {kind} feature needs min and max (uniform) or mean and std (normal)")
        if f.get("std", 0) < 0:
            raise ValueError(f"{where}.std must be >= 0, got {f['std']}")
        if "min" in f and "max" in f and f["min"] > f["max"]:
            raise ValueError(f"{where}: min ({f['min']:g}) is above max ({f['max']:g})")
        if kind == "int":
            if "min" in f and "max" in f and math.ceil(f["min"]) > math.floor(f["max"]):
                raise ValueError(f"{where}: no whole number between min ({f['min']:g}) and max ({f['max']:g})")
        out.append(f)
    return out


def validate_source(source: Mapping, field: str = "source") -> dict:
    """A checked copy of a source spec; ValueError naming the bad field or file.

    A file source's `path` is made absolute (the Locust process runs elsewhere) and the file
    is read once here, so a malformed line is reported before Locust starts.
    """
    if not isinstance(source, Mapping):
        raise ValueError(f"{field} must be a mapping with a 'type', got {type(source).__name__}")
    kind = source.get("type")
    if kind not in SOURCE_TYPES:
        raise ValueError(f"{field}.type must be one of {', '.join(SOURCE_TYPES)}, got {kind!r}")
    if kind == "synthetic":
        unknown = sorted(set(source) - {"type", "features", "layout"})
        if unknown:
            raise ValueError(f"{field}: unknown key(s) {', '.join(map(repr, unknown))} for a synthetic source; expected features, layout")
        out: dict = {"type": "synthetic"}
        if source.get("features") is not None:
            out["features"] = validate_features(source["features"], f"{field}.features")
        layout = source.get("layout", "named")
        if layout not in LAYOUTS:
            raise ValueError(f"{field}.layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        if layout != "named":
            out["layout"] = layout
            for i, f in enumerate(out.get("features", ())):
                if f["type"] == "category":
                    raise ValueError(f"{field}.features[{i}] ({f['name']}): the tensor layout takes numeric features only")
        return out
    unknown = sorted(set(source) - {"type", "path", "format", "limit"})
    if unknown:
        raise ValueError(f"{field}: unknown key(s) {', '.join(map(repr, unknown))} for a file source; expected path, format, limit")
    raw = source.get("path")
    if not isinstance(raw, (str, Path)) or not str(raw):
        raise ValueError(f"{field}.path must name a file of recorded requests, got {raw!r}")
    path = Path(raw).expanduser().resolve()
    if not path.is_file():
        raise ValueError(f"{field}.path: {raw} is not a file")
    out = {"type": "file", "path": str(path)}
    fmt = source.get("format")
    if fmt is None:
        fmt = sniff_format(path)
    elif fmt not in FILE_FORMATS:
        raise ValueError(f"{field}.format must be one of {', '.join(FILE_FORMATS)}, got {fmt!r}")
    out["format"] = fmt
    if source.get("limit") is not None:
        limit = source["limit"]
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"{field}.limit must be a whole number >= 1, got {limit!r}")
        out["limit"] = limit
    if not load_records(out):
        raise ValueError(f"{field}.path: {raw} holds no requests")
    return out


# -- synthetic ----------------------------------------------------------------------------


def demo_request(rng: np.random.Generator, request_id: str, rows: int, layout: str = "named") -> dict:
    """The default request: one FP32 input per demo feature, `rows` values each (or, with
    layout "tensor", one [rows, features] input)."""
    block = synthetic_rows(rows, rng)
    if layout == "tensor":
        shape = [rows, len(FEATURES)]
        return {"id": request_id, "inputs": [{"name": TENSOR_INPUT, "shape": shape, "datatype": "FP32", "data": block.ravel().tolist()}]}
    return {
        "id": request_id,
        "inputs": [
            {"name": name, "shape": [rows], "datatype": "FP32", "data": block[:, j].tolist()}
            for j, name in enumerate(FEATURES)
        ],
    }


def _short_floats(values: np.ndarray, dtype) -> list[float]:
    # str() of a numpy float32 (float16) is its shortest round-tripping text; float() of that
    # text is a double that JSON writes short and a server reads back as the same float32.
    return [float(str(v)) for v in values.astype(dtype)]


def synthetic_columns(features: Sequence[Mapping], n: int, rng: np.random.Generator) -> dict[str, list]:
    """`n` rows as a dict of columns (feature name -> list of values, None where missing).

    `features` is a validated schema (`validate_features`). Floats are float, ints int,
    categories str.
    """
    columns: dict[str, list] = {}
    for f in features:
        kind = f["type"]
        if kind == "category":
            cats = f["categories"]
            weights = f.get("weights")
            p = None if weights is None else np.asarray(weights, dtype=float) / sum(weights)
            idx = rng.choice(len(cats), size=n, p=p)
            values: list = [cats[j] for j in idx.tolist()]
        else:
            lo, hi = f.get("min"), f.get("max")
            if "mean" in f:
                x = rng.normal(f["mean"], f["std"], n)
            else:
                x = rng.uniform(lo, hi, n) if kind == "float" else None
            if kind == "int":
                if x is None:
                    x = rng.integers(math.ceil(lo), math.floor(hi), size=n, endpoint=True)
                else:
                    x = np.rint(x)
                    lo = None if lo is None else math.ceil(lo)
                    hi = None if hi is None else math.floor(hi)
                if lo is not None or hi is not None:
                    x = np.clip(x, lo, hi)
                values = [int(v) for v in x.tolist()]
            else:
                if lo is not None or hi is not None:
                    x = np.clip(x, lo, hi)
                if f["datatype"] == "FP64":
                    values = x.tolist()
                else:
                    values = _short_floats(x, np.float16 if f["datatype"] == "FP16" else np.float32)
        if f["missing"] > 0:
            mask = rng.random(n) < f["missing"]
            values = [None if m else v for v, m in zip(values, mask.tolist())]
        columns[f["name"]] = values
    return columns


def v2_request(
    features: Sequence[Mapping], columns: Mapping[str, list], request_id: str | None = None, layout: str = "named"
) -> dict:
    """An Open Inference Protocol v2 infer request: one input per feature, in schema order
    (layout "named"), or a single [rows, features] input (layout "tensor")."""
    if layout == "tensor":
        cols = [columns[f["name"]] for f in features]
        rows = len(cols[0]) if cols else 0
        datatype = "FP64" if any(f["datatype"] == "FP64" for f in features) else "FP32"
        data = [col[r] for r in range(rows) for col in cols]
        inputs = [{"name": TENSOR_INPUT, "shape": [rows, len(cols)], "datatype": datatype, "data": data}]
    else:
        inputs = []
        for f in features:
            data = columns[f["name"]]
            inputs.append({"name": f["name"], "shape": [len(data)], "datatype": f["datatype"], "data": list(data)})
    return {"id": request_id, "inputs": inputs} if request_id is not None else {"inputs": inputs}


def synthetic_request(
    features: Sequence[Mapping], rng: np.random.Generator, request_id: str, rows: int, layout: str = "named"
) -> dict:
    return v2_request(features, synthetic_columns(features, rows, rng), request_id, layout)


# -- recorded requests --------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    body: bytes
    path: str | None = None  # None: the default /v2/models/{model}/infer
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)


def sniff_format(path: str | Path) -> str:
    with open(path, "rb") as f:
        return "capture" if f.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC else "jsonl"


def clean_path(raw, where: str) -> str | None:
    """The path (and query) to request; None when nothing was recorded. ValueError if unusable."""
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise ValueError(f"{where}: path must be a string, got {raw!r}")
    if any(ord(c) <= 32 or ord(c) == 127 for c in raw):
        raise ValueError(f"{where}: path {raw!r} holds whitespace or control characters")
    if "://" in raw.split("?", 1)[0]:  # absolute form: keep the path, never the host
        parts = urlsplit(raw)
        raw = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if not raw.startswith("/"):
        raise ValueError(f"{where}: path {raw!r} must start with '/'")
    return raw


def _clean_headers(raw, where: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: headers must be a mapping of name to value, got {raw!r}")
    out = {}
    for k, v in raw.items():
        if not isinstance(k, str) or not _TOKEN_RE.fullmatch(k) or not isinstance(v, str) or "\r" in v or "\n" in v:
            raise ValueError(f"{where}: header {k!r}: {v!r} is not a valid header line")
        if k.lower() not in DROPPED_HEADERS:
            out[k] = v
    return out


def _clean_method(raw, where: str) -> str:
    if raw is None:
        return "POST"
    if not isinstance(raw, str) or not _METHOD_RE.fullmatch(raw.upper()):
        raise ValueError(f"{where}: method must be an HTTP method name, got {raw!r}")
    return raw.upper()


def _read_jsonl(path: Path, limit: int | None) -> list[RecordedRequest]:
    records = []
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
                raise ValueError(f"{where}: not a JSON request ({e})") from None
            if isinstance(obj, dict) and "body" in obj and set(obj) <= _WRAPPER_KEYS:
                body = obj["body"]
                if isinstance(body, str):
                    data = body.encode()
                else:
                    data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
                records.append(RecordedRequest(
                    data, clean_path(obj.get("path"), where), _clean_method(obj.get("method"), where),
                    _clean_headers(obj.get("headers"), where),
                ))
            else:
                records.append(RecordedRequest(line))
            if limit is not None and len(records) >= limit:
                break
    return records


def _read_capture(path: Path, limit: int | None) -> list[RecordedRequest]:
    uri = path.resolve().as_uri() + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as e:
        raise ValueError(f"{path}: cannot open the capture read-only ({e})") from None
    try:
        sql = "SELECT seq, method, route, request_body FROM exchanges ORDER BY seq"
        rows = conn.execute(sql + (f" LIMIT {int(limit)}" if limit else "")).fetchall()
    except sqlite3.Error as e:  # not a database, no exchanges table, ...
        raise ValueError(f"{path}: not a Shadowline capture ({e})") from None
    finally:
        conn.close()
    records = []
    for seq, method, route, body in rows:
        where = f"{path} (exchange seq {seq})"
        if isinstance(body, str):
            body = body.encode()
        records.append(RecordedRequest(bytes(body or b""), clean_path(route, where), _clean_method(method, where)))
    return records


def load_records(source: Mapping) -> list[RecordedRequest]:
    """The recorded requests of a validated file source, in recorded order."""
    path = Path(source["path"])
    fmt = source.get("format") or sniff_format(path)
    limit = source.get("limit")
    try:
        return _read_capture(path, limit) if fmt == "capture" else _read_jsonl(path, limit)
    except OSError as e:
        raise ValueError(f"{path}: cannot read recorded requests ({e})") from None


def check_replay_protocol(source: Mapping, protocol: str, field: str = "source") -> None:
    """ValueError when a validated source cannot be sent over `protocol`.

    A capture of the gRPC proxy holds serialized messages under their method paths: only a
    gRPC load can replay them. Over gRPC, only such a capture can be replayed: JSON lines and
    HTTP captures hold JSON bodies, and a synthetic source with `missing` values would send
    nulls, which a v2 gRPC tensor cannot carry.
    """
    if source.get("type") == "synthetic":
        if protocol == "grpc":
            for i, f in enumerate(source.get("features") or ()):
                if f.get("missing", 0) > 0:
                    raise ValueError(f"{field}.features[{i}] ({f['name']}).missing: a v2 gRPC tensor cannot carry "
                                     "a null; over gRPC, missing must be 0")
        return
    records = load_records(source)
    grpc = sum(r.method == GRPC_METHOD for r in records)
    if protocol == "grpc" and grpc < len(records):
        raise ValueError(f"{field}.path: {source['path']} holds HTTP requests; over gRPC only a capture "
                         "recorded by the gRPC proxy can be replayed")
    if protocol != "grpc" and grpc:
        raise ValueError(f"{field}.path: {source['path']} holds gRPC calls (a capture of the gRPC proxy); "
                         "replay it over gRPC")


def user_slice(records: Sequence[RecordedRequest], index: int, count: int) -> list[RecordedRequest]:
    """User `index` of `count`: every count-th record from its own offset (disjoint when
    there are at least `count` records; otherwise user i shares record i % n)."""
    if not records:
        raise ValueError("no recorded requests to replay")
    if count < 1 or index < 0:
        raise ValueError(f"need index >= 0 and count >= 1, got index={index}, count={count}")
    return list(records[(index % count) % len(records)::count])
