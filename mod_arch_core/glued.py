"""The numbers a chapter glues into its prose, made readable outside the built book.

The chapters quote numbers through myst-nb's ``glue`` and ``{glue:text}`` roles, which only
Jupyter Book fills in; opened in Jupyter or Colab, the prose shows the raw roles. This module
records every value a chapter glues (:func:`record_glued`, called by
:func:`mod_arch_core.provenance.setup_notebook`) and prints, in a chapter's last cell, each sentence
of its prose that quotes a number, with the values of the current run filled in
(:func:`numbers_in_this_chapter`). The values are formatted by myst-nb's own ``format_plain_text``
from the same display data the book reads, so the two agree.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

__all__ = ["GLUE_ROLE", "fill_roles", "glued_values", "numbers_in_this_chapter", "record_glued"]

#: A glue role in MyST Markdown: ``{glue}`key```, ``{glue:text}`key:.3f```, ``{glue:md}`key```.
GLUE_ROLE = re.compile(r"\{glue(?::(any|text|md))?\}`([^`]+)`")
#: Prefix myst-nb puts on the MIME types of a value glued with ``display=False``.
_GLUE_PREFIX = "application/papermill.record/"
_RECORDED: dict[str, dict[str, Any]] = {}
_HOOKED: set[int] = set()
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z{*(])")
#: The start of a list item or of a table, where a new quoted piece begins.
_ITEM_START = re.compile(r"\n(?=\s*(?:[-*] |\d+\. |\|))")


def _capture(msg: dict[str, Any]) -> dict[str, Any]:
    content = msg.get("content", {})
    record = content.get("metadata", {}).get("scrapbook")
    if isinstance(record, dict) and "name" in record:
        prefix = record.get("mime_prefix", "")
        _RECORDED[record["name"]] = {
            key[len(prefix) :]: value
            for key, value in content.get("data", {}).items()
            if key.startswith(prefix)
        }
    return msg  # a display hook that returns the message lets it through unchanged


def record_glued(shell: Any = None) -> bool:
    """Record every value glued from now on in this kernel; False outside an IPython kernel."""
    if shell is None:
        try:
            from IPython import get_ipython
        except ImportError:  # pragma: no cover - IPython is a dependency
            return False
        shell = get_ipython()
    publisher = getattr(shell, "display_pub", None)
    if publisher is None or not hasattr(publisher, "register_hook"):
        return False
    if id(publisher) not in _HOOKED:
        publisher.register_hook(_capture)
        _HOOKED.add(id(publisher))
    return True


def glued_values() -> dict[str, dict[str, Any]]:
    """The display data (MIME type -> value) of every value recorded so far, by glue key."""
    return dict(_RECORDED)


def _render(kind: str | None, content: str, values: dict[str, dict[str, Any]]) -> str:
    from myst_nb.core.variables import format_plain_text

    key, fmt = content, ""
    if kind == "text" and ":" in content:
        key, fmt = content.rsplit(":", 1)
    bundle = values.get(key)
    if bundle is None:
        return f"‹{key}: not glued in this run›"
    if kind in (None, "any", "md") and "text/markdown" in bundle:
        return str(bundle["text/markdown"]).strip()
    if "text/plain" in bundle:
        return f"**{format_plain_text(str(bundle['text/plain']), fmt)}**"
    return f"‹{key}: shown in the book›"


def fill_roles(text: str, values: dict[str, dict[str, Any]] | None = None) -> str:
    """``text`` with every glue role replaced by its value (bold), as the book would render it."""
    values = glued_values() if values is None else values
    return GLUE_ROLE.sub(lambda m: _render(m.group(1), m.group(2), values), text)


def _quoting_sentences(notebook: dict[str, Any]) -> list[tuple[str, str]]:
    """(section heading, sentence) for every sentence of the prose that holds a glue role."""
    found = []
    heading = "Introduction"
    for cell in notebook.get("cells", []):
        tags = cell.get("metadata", {}).get("tags", [])
        if cell.get("cell_type") != "markdown" or {"solution", "remove-cell"} & set(tags):
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else source
        for block in re.split(r"\n\s*\n", source):
            match = re.match(r"^(#+)\s+(.*)", block.strip())
            if match:
                heading = match.group(2).strip()
                block = block.strip()[match.end() :]
            for item in _ITEM_START.split(block):
                if item.lstrip().startswith("|"):  # a table row is quoted whole
                    pieces = [line for line in item.splitlines() if line.strip()]
                else:
                    pieces = _SENTENCE_END.split(" ".join(item.split()))
                found.extend((heading, p.strip()) for p in pieces if GLUE_ROLE.search(p))
    return found


def numbers_in_this_chapter(
    chapter: str | Path, values: dict[str, dict[str, Any]] | None = None
) -> Any:
    """The sentences of a chapter's prose that quote numbers, filled in from this run.

    Parameters
    ----------
    chapter : str or path
        The chapter's notebook, by stem (``"05_results_performance"``, looked up in the current
        folder, which is ``notebooks/`` for every chapter) or by path.
    values : dict, optional
        Glued display data by key; default: what :func:`record_glued` recorded in this kernel.

    Returns
    -------
    IPython.display.Markdown
        One bullet per sentence, grouped under the section it comes from.
    """
    from IPython.display import Markdown

    values = glued_values() if values is None else values
    path = Path(chapter)
    if path.suffix != ".ipynb":
        path = path.with_name(path.name + ".ipynb")
    lines = [
        "### Numbers in this chapter",
        "",
        "*The prose quotes its numbers through `{glue:text}` roles, which only the built book "
        "fills in. These are the same sentences with the numbers of this run.*",
    ]
    if not path.is_file():
        lines += ["", f"(No {path.name} in {Path.cwd()}; the recorded values are:)", ""]
        lines += [f"- `{key}`: {_render('text', key, values)}" for key in values]
        return Markdown("\n".join(lines))
    notebook = json.loads(path.read_text(encoding="utf-8"))
    current = None
    for heading, sentence in _quoting_sentences(notebook):
        if heading != current:
            lines += ["", f"**{heading}**", ""]
            current = heading
        lines.append(f"- {fill_roles(sentence, values)}")
    return Markdown("\n".join(lines))
