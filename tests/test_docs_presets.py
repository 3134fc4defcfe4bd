"""docs/training.md, *Presets of today's recipes*: each table of settings says what `wrn train --preset P
--print-config` shows for every preset its heading names, row by row (the "ours" column), through the real CLI."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from conftest import md_table, printed_config

DOC = Path(__file__).resolve().parents[1] / "docs" / "training.md"
HEADER = ["setting", "key", "paper", "their code", "ours", "source"]


def _tables() -> dict[str, tuple[list[str], list[list[str]]]]:
    """Heading (the presets it names) -> the table of settings under it."""
    section = (
        DOC.read_text(encoding="utf-8").split("### Presets of today's recipes", 1)[1].split("\n## ", 1)[0]
    )
    out = {}
    for chunk in section.split("\n##### ")[1:]:
        heading, body = chunk.split("\n", 1)
        header, rows = md_table(f"## T\n{body}", "T")
        assert header == HEADER, heading
        out[heading] = (re.findall(r"`([a-z0-9-]+)`", heading), rows)
    return out


TABLES = _tables()
PRESETS = sorted({p for presets, _ in TABLES.values() for p in presets})


def _ours(cell: str, preset: str):
    """The value the "ours" cell gives ``preset``: one value for all, or parts ``value (who, ...)`` where who is
    a data set (CIFAR-10, CIFAR-100) or a preset's suffix (-sam-cutout); a part without who is the rest's."""
    rest = None
    for part in cell.split("; "):
        m = re.fullmatch(r"`([^`]*)`(?: \(([^)]*)\))?", part.strip())
        assert m, (cell, part)
        value, who = yaml.safe_load(m.group(1)), m.group(2)
        if who is None:
            rest = value
            continue
        for label in who.split(", "):
            dataset = {"CIFAR-10": "cifar10", "CIFAR-100": "cifar100", "SVHN": "svhn"}.get(label)
            if dataset is not None and preset.startswith(dataset + "-"):
                return value
            if dataset is None and (
                label == preset or re.fullmatch(rf"cifar100?-wrn-28-10{re.escape(label)}", preset)
            ):
                return value
    assert rest is not None or cell, (cell, preset)
    return rest


def test_the_tables_cover_every_preset_of_todays_recipes():
    from wrn.train.compose import list_presets

    todays = {
        n
        for n in list_presets()
        if re.search(r"-(cutout|autoaugment|sam|trades|trades-awp|at-awp|pgd-at|dm-at|fixmatch-\d+)$", n)
    }
    assert set(PRESETS) == todays and len(todays) == 27
    assert {h.split(":")[0] for h in TABLES} == {
        "Cutout",
        "AutoAugment",
        "SAM",
        "TRADES",
        "PGD-AT",
        "TRADES-AWP",
        "AT-AWP",
        "DM-AT",
        "FixMatch",
    }


@pytest.mark.parametrize("preset", PRESETS)
def test_the_ours_column_is_what_print_config_shows(capsys, preset):
    printed = printed_config(capsys, preset)
    checked = 0
    for presets, rows in TABLES.values():
        if preset not in presets:
            continue
        for row in rows:
            key = row[1].strip("`")
            section, name = key.split(".")
            want = _ours(row[4], preset)
            assert printed[section][name] == want, (preset, key, printed[section][name], want)
            checked += 1
    assert checked >= 20
