"""The model table of ``wrn models`` as shipped data: every registered name at its default number of classes,
with its parameters and multiply-adds, read without importing torch.

``table.json`` is written by ``python -m wrn.models.table`` from :func:`wrn.models.complexity.model_table`, and a
test checks that it equals what the models count today.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

TABLE_FILE = "table.json"


def shipped_rows() -> dict[str, dict]:
    """Name -> row (``name, arch, num_classes, input_size, params, macs, paper``), in the registry's order."""
    text = (resources.files("wrn.models") / TABLE_FILE).read_text(encoding="utf-8")
    return {row["name"]: row for row in json.loads(text)["rows"]}


def write(path: str | Path | None = None) -> Path:
    """Recompute the table with the models themselves and write it (default: the package's table.json)."""
    from wrn.atomic import atomic_write_text
    from wrn.models.complexity import model_table

    path = Path(path) if path is not None else Path(__file__).with_name(TABLE_FILE)
    rows = ",\n".join("  " + json.dumps(row) for row in model_table())
    text = '{"version": 1, "rows": [\n' + rows + "\n]}\n"
    return atomic_write_text(path, text)


def format_table(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    headers = ("name", "classes", "input", "params", "MACs (G)", "paper")
    cells = [
        (
            r["name"],
            str(r["num_classes"]),
            f"{r['input_size']}x{r['input_size']}",
            f"{r['params']:,}",
            f"{r['macs'] / 1e9:.3f}",
            r["paper"],
        )
        for r in rows
    ]
    if markdown:
        lines = [
            "| " + " | ".join(headers) + " |",
            "|" + "|".join(["---", "---:", "---:", "---:", "---:", "---"]) + "|",
        ]
        lines += ["| " + " | ".join(c) + " |" for c in cells]
        return "\n".join(lines)
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    right = {1, 2, 3, 4}

    def fmt(row: tuple[str, ...]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    return "\n".join([fmt(headers), fmt(tuple("-" * w for w in widths)), *map(fmt, cells)])


if __name__ == "__main__":
    print(write())
