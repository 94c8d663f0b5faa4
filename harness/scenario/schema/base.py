"""What every part of the scenario schema shares: bounds, arm names, name patterns, the strict base model.

Also the registry of tagged union members (`TAGGED`) and the resolution of paths written in a
scenario file, which more than one section of the file takes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Tag, ValidationInfo

# ---------------------------------------------------------------------------------------------
# Bounds and vocabularies

MAX_TOTAL_DURATION_S = 3600  # a scenario (after sweep expansion) runs at most an hour
MAX_PHASE_DURATION_S = 3600
MAX_PHASES = 200  # after sweep expansion
MAX_RATE = 10_000.0  # requests/s, any load shape at any time
MAX_USERS = 1_000  # Locust users
MAX_ROWS_PER_REQUEST = 10_000
MAX_SWEEP_VALUES = 50
DEFAULT_RATE = 50.0  # requests/s when a constant load names neither rate nor users
USER_RATE = 20.0  # requests/s one Locust user is asked to send at most (default users)

ARMS = ("incumbent", "candidate", "baseline")
SHADOW_ARMS = ("candidate", "baseline")

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"  # scenario, phase and fault names
_FEATURE_NAME = r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$"
_MODEL_NAME = r"^[A-Za-z0-9._-]+$"  # as in /v2/models/{model}/infer
_SHAPE_CLASS = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"
# What each pattern means, for error messages.
PATTERNS = {
    _NAME: "1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit",
    _FEATURE_NAME: "a letter or '_', then letters, digits, '_', '.' or '-'",
    _MODEL_NAME: "letters, digits, '.', '_' or '-'",
    _SHAPE_CLASS: "'module.path:ClassName'",
}


# ---------------------------------------------------------------------------------------------
# Base


class _Model(BaseModel):
    # serialize_by_alias: a dump reads back as a scenario (`class`, not `class_`)
    model_config = ConfigDict(extra="forbid", strict=True, validate_default=False, serialize_by_alias=True)


# Union members are tagged `~name`: the tag shows up in pydantic's error locations, and
# `harness.scenario.load` drops such parts when it prints a field path.
TAGGED: dict[str, Any] = {}


def _tagged(tag: str, tp: Any) -> Any:
    TAGGED[tag] = tp
    return Annotated[tp, Tag(tag)]


def scenario_path(value: str, info: ValidationInfo) -> tuple[Path, str | None]:
    """A path written in the scenario, and the directory relative paths start at (None: the cwd).

    The loader passes the scenario file's directory as `base_dir` in the validation context, so a
    file names its neighbours the way its author sees them.
    """
    base = (info.context or {}).get("base_dir")
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = Path(base or ".") / path
    return path, base
