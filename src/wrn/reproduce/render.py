"""Both files of the report from the one collected :class:`~wrn.reproduce.collect.Report`: ``report.md`` and
``report.html``, each a Jinja2 template (``templates/``), the HTML one autoescaped. The templates hold the
layout only; every sentence comes from the content, so the two files cannot say different things.
"""

from __future__ import annotations

import base64
from functools import cache
from pathlib import Path

from wrn.reproduce.collect import Report

# The few labels both layouts put in front of content.
WORDS = {
    "runs": "Runs:",
    "scaled": "Scaled down, not the paper's setting.",
    "unreliable": "Unreliable:",
}


def md_cell(text: object) -> str:
    """A Markdown table cell: a literal | escaped, no line break."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def data_uri(path: Path) -> str:
    """A PNG inlined, so that report.html is one self-contained file."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


@cache
def environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=PackageLoader("wrn.reproduce", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["md_cell"] = md_cell
    env.filters["data_uri"] = data_uri
    env.globals["zip"] = zip
    return env


def render(report: Report, name: str) -> str:
    """``name`` (report.md or report.html) of ``report``."""
    text = environment().get_template(f"{name}.j2").render(report=report, words=WORDS)
    return text.rstrip() + "\n"
