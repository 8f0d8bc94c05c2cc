"""Channel API presets (protocol per platform) and their default field mappings."""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path

from collectors.mapping import MappingConfig
from collectors.presets.base import Call, Credentials, Page, Preset
from collectors.presets.douyin import DouyinPreset
from collectors.presets.jd import JdPreset
from collectors.presets.jushuitan import JushuitanPreset
from collectors.presets.pdd import PddPreset
from collectors.presets.tmall import TmallPreset
from collectors.presets.youzan import YouzanPreset

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (TmallPreset(), JdPreset(), PddPreset(), DouyinPreset(), YouzanPreset(), JushuitanPreset())
}
MAPPINGS_PATH = Path(__file__).with_name("mappings.toml")
# Whole [sources.NAME] blocks for payment logs, carrier pushes and ERP/WMS shapes, to copy and edit.
SOURCE_PRESETS_DIR = Path(__file__).with_name("sources")

__all__ = [
    "PRESETS",
    "Call",
    "Credentials",
    "Page",
    "Preset",
    "get_preset",
    "load_preset_mapping",
    "source_preset",
    "source_presets",
]


def get_preset(name: str | None) -> Preset:
    """The preset called `name`; ValueError listing the known ones otherwise."""
    preset = PRESETS.get(name or "")
    if preset is None:
        raise ValueError(f"unknown http preset {name!r}; use one of {sorted(PRESETS)}")
    return preset


@cache
def _mapping_tables() -> dict[str, dict]:
    return tomllib.loads(MAPPINGS_PATH.read_text(encoding="utf-8"))


def load_preset_mapping(channel: str) -> MappingConfig:
    """The default MappingConfig of `channel` from mappings.toml (copied into config.toml)."""
    tables = _mapping_tables()
    if channel not in tables:
        raise ValueError(f"no default mapping for {channel!r}; known: {sorted(tables)}")
    return MappingConfig.model_validate(tables[channel])


def source_presets() -> list[str]:
    """Names of the copyable source blocks (collectors/presets/sources/NAME.toml)."""
    return sorted(p.stem for p in SOURCE_PRESETS_DIR.glob("*.toml"))


def source_preset(name: str) -> str:
    """The text of one source block, to paste into config.toml; ValueError listing the known ones."""
    path = SOURCE_PRESETS_DIR / f"{name}.toml"
    if name not in source_presets():
        raise ValueError(f"no source preset {name!r}; known: {source_presets()}")
    return path.read_text(encoding="utf-8")
