"""`traffic`: where a scenario's requests come from, seeded synthetic rows or a file of recorded requests."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from harness.demo_model import FEATURES as DEMO_FEATURES

from .base import _FEATURE_NAME, _MODEL_NAME, MAX_ROWS_PER_REQUEST, _Model, scenario_path
from .errors import Problems


DATATYPES = {  # v2 tensor datatypes per feature type; the first is the default
    "float": ("FP32", "FP16", "FP64"),
    "int": ("INT64", "INT32", "INT16", "INT8", "UINT8", "UINT16", "UINT32", "UINT64"),
    "category": ("BYTES",),
}


class Feature(_Model):
    """One column of synthetic rows. Numbers: uniform on [min, max], or normal(mean, std) clipped to
    min and/or max when given (int: whole numbers). Categories: drawn with `weights` (default equal)."""

    name: str = Field(pattern=_FEATURE_NAME, description="Input name in the request.")
    type: Literal["float", "int", "category"] = Field("float", description="float, int or category.")
    datatype: str | None = Field(
        None,
        description="v2 tensor datatype: float FP32 (default), FP16, FP64; int INT64 (default), INT32, INT16, "
        "INT8, UINT8..UINT64; category BYTES.",
    )
    min: float | None = Field(None, description="Lower bound (numbers).")
    max: float | None = Field(None, description="Upper bound (numbers).")
    mean: float | None = Field(None, description="Mean of a normal distribution (numbers).")
    std: float | None = Field(None, ge=0, description="Standard deviation of a normal distribution (numbers).")
    categories: list[str] | None = Field(None, min_length=1, description="The values a category takes.")
    weights: list[float] | None = Field(None, min_length=1, description="Relative frequency of each category.")
    missing: float = Field(0.0, ge=0, le=1, description="Share of values that are missing (sent as null).")

    @model_validator(mode="after")
    def _distribution(self) -> Feature:
        problems = []
        if self.datatype is not None and self.datatype not in DATATYPES[self.type]:
            problems.append(("datatype", f"a {self.type} feature is sent as one of {', '.join(DATATYPES[self.type])} (got {self.datatype!r})"))
        if self.type == "category":
            for key in ("min", "max", "mean", "std"):
                if getattr(self, key) is not None:
                    problems.append((key, "a category feature takes `categories` (and `weights`), not numeric bounds"))
            if self.categories is None:
                problems.append(("categories", "a category feature needs its list of categories"))
            elif len(set(self.categories)) != len(self.categories):
                problems.append(("categories", "categories must be unique"))
            if self.weights is not None:
                if self.categories is not None and len(self.weights) != len(self.categories):
                    problems.append(("weights", f"one weight per category: {len(self.categories)} categories, {len(self.weights)} weights"))
                if any(not math.isfinite(w) or w < 0 for w in self.weights) or not sum(self.weights) > 0:
                    problems.append(("weights", "weights must be finite, >= 0 and not all 0"))
        else:
            for key in ("categories", "weights"):
                if getattr(self, key) is not None:
                    problems.append((key, f"a {self.type} feature takes min/max or mean/std, not {key}"))
            for key in ("min", "max", "mean", "std"):
                value = getattr(self, key)
                if value is not None and not math.isfinite(value):
                    problems.append((key, f"must be finite (got {value})"))
            if (self.mean is None) != (self.std is None):
                problems.append(("std" if self.std is None else "mean", "mean and std go together"))
            if self.mean is None and (self.min is None or self.max is None):
                problems.append(("", "give min and max (uniform), or mean and std (normal, optionally clipped by min/max)"))
            if self.min is not None and self.max is not None:
                if not self.min <= self.max:
                    problems.append(("max", f"max ({self.max:g}) must be >= min ({self.min:g})"))
                elif self.type == "int" and math.ceil(self.min) > math.floor(self.max):
                    problems.append(("max", f"no whole number between min ({self.min:g}) and max ({self.max:g})"))
        if problems:
            raise Problems(problems)
        return self


class SyntheticTraffic(_Model):
    """Requests built from seeded synthetic rows."""

    features: list[Feature] | None = Field(
        None,
        min_length=1,
        description="The feature schema. null: the demo model's features and distributions "
        "(harness.demo_model.synthetic_rows), which the demo servers expect.",
    )
    rows_per_request: int = Field(1, ge=1, le=MAX_ROWS_PER_REQUEST, description="Rows in each request (a batch).")
    layout: Literal["named", "tensor"] = Field(
        "named",
        description="named: one input per feature, shape [rows]; tensor: a single [rows, features] input "
        "named 'features' (numeric features only).",
    )

    @model_validator(mode="after")
    def _features(self) -> SyntheticTraffic:
        problems = []
        if self.features is not None:
            seen: set[str] = set()
            for i, feature in enumerate(self.features):
                if feature.name in seen:
                    problems.append((f"features[{i}].name", f"feature {feature.name!r} is listed twice"))
                seen.add(feature.name)
                if self.layout == "tensor" and feature.type == "category":
                    problems.append((f"features[{i}].type", "the tensor layout takes numeric features only; use layout: named"))
        if problems:
            raise Problems(problems)
        return self

    def feature_names(self) -> tuple[str, ...]:
        return DEMO_FEATURES if self.features is None else tuple(f.name for f in self.features)


class FileTraffic(_Model):
    """Recorded requests replayed as the load, in recorded order, cycled while the load lasts."""

    path: str = Field(
        min_length=1,
        description="JSON lines (a request body, or {body, path, method, headers}, per line) or a Shadowline "
        "capture.db; relative to the scenario file. The loaded scenario holds the absolute path.",
    )
    format: Literal["jsonl", "capture"] | None = Field(
        None, description="jsonl or capture; null: a file with SQLite's header is a capture, anything else JSON lines."
    )
    limit: int | None = Field(None, ge=1, description="Replay only the first N requests.")

    @field_validator("path")
    @classmethod
    def _exists(cls, value: str, info: ValidationInfo) -> str:
        path, base = scenario_path(value, info)
        if not path.is_file():
            raise ValueError(f"no such file: {path}" + ("" if base is None else f" (relative paths start at {base})"))
        return str(path.resolve())


class Traffic(_Model):
    """Where requests come from: synthetic rows (the default) or a file of recorded requests."""

    model: str = Field("demo", pattern=_MODEL_NAME, description="Model name in /v2/models/{model}/infer.")
    synthetic: SyntheticTraffic | None = Field(None, description="Synthetic rows; the default when `file` is absent.")
    file: FileTraffic | None = Field(None, description="Recorded requests instead of synthetic rows.")

    @model_validator(mode="after")
    def _one_source(self) -> Traffic:
        if self.synthetic is not None and self.file is not None:
            raise ValueError("give either `synthetic` or `file`, not both")
        if self.file is None and self.synthetic is None:
            self.synthetic = SyntheticTraffic()
        return self

    def feature_names(self) -> tuple[str, ...] | None:
        """The request's feature names when known (synthetic traffic), else None."""
        return self.synthetic.feature_names() if self.synthetic is not None else None

    @property
    def rows_per_request(self) -> int:
        return self.synthetic.rows_per_request if self.synthetic is not None else 1

    def source(self) -> dict:
        """This traffic as a `harness.load.sources` dict (LoadSpec.source)."""
        if self.file is not None:
            return {"type": "file", **self.file.model_dump(exclude_none=True)}
        out: dict[str, Any] = {"type": "synthetic"}
        if self.synthetic.features is not None:
            out["features"] = [f.model_dump(exclude_none=True) for f in self.synthetic.features]
        return out
