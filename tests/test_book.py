"""The executable book: committed notebooks, book configuration, pipeline, and the rendered site.

Fast tests check the sources (notebooks stored clean, ``_toc.yml``, ``_config.yml``,
``CITATION.cff``) and the pipeline's pieces (:mod:`mod_arch_core.book`). The slow test builds the
whole book with ``-W``, serves it on 127.0.0.1 and opens every page in headless Chromium: pages load,
images exist, formulas are typeset by the local MathJax, internal links resolve, and nothing is
loaded from the internet. Chromium comes from Debian: ``apt-get install -y chromium``.
"""

from __future__ import annotations

import functools
import html
import http.server
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat
import pytest
import yaml

from mod_arch_core import book

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _load_yaml(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------
# Committed notebooks
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_clean(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for index, cell in enumerate(nb.cells):
        where = f"{path.name} cell {index}"
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{where} has outputs; clear them before committing"
            assert cell.execution_count is None, f"{where} has an execution count"
        stray = set(cell.metadata) - {"tags"}
        assert not stray, f"{where} has stray metadata {sorted(stray)}"
    stray = set(nb.metadata) - {"kernelspec", "language_info"}
    assert not stray, f"{path.name} has stray notebook metadata {sorted(stray)}"
    assert nb.metadata["kernelspec"]["name"] == book.KERNEL_NAME


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_has_one_parameters_cell_with_profile(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: {len(tagged)} cells tagged 'parameters', want 1"
    assert tagged[0].cell_type == "code"
    assert re.search(r"^profile\s*=", tagged[0].source, re.M), "the parameters set `profile`"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_follows_the_chapter_skeleton(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert markdown.lstrip().startswith("# "), f"{path.name} must open with its title"
    for heading in ("Overview", "Prerequisites", "Setup", "Summary", "Exercises", "References"):
        assert re.search(rf"^## {heading}\b", markdown, re.M), f"{path.name}: no '## {heading}'"
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "setup_notebook(" in code, f"{path.name}: the Setup cell must call setup_notebook"


_GLUE_FIGURE = re.compile(
    r"```\{glue:figure\} (?P<key>\S+)\n(?P<options>(?::[^\n]*\n)+)\n(?P<caption>(?:(?!```).)+?)\n```"
    r"(?P<after>\n*```\{glue:md\} (?P<caveat>\S+)\n:format: myst\n```)?",
    re.S,
)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_figure_is_pasted_with_a_name_alt_text_and_caption(path: Path) -> None:
    """A figure cell glues its figure; a ``glue:figure`` gives it a label, alt text and caption.

    The results figures (class ``results-figure``) are each followed by their glued caveat from
    ``analysis.learned_caveat``; no caption types a number of runs or a checkpoint by hand.
    """
    nb = nbformat.read(path, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    shown = set(re.findall(r'glue\(\s*"(fig_\w+)",\s*(?:show\(|shown\))', code))
    unglued = re.sub(r'glue\(\s*"fig_\w+",\s*show\(|shown = show\(', "", code)
    assert "show(" not in unglued, (
        f"{path.name}: a figure is shown without being glued into a captioned figure"
    )
    pasted = {m["key"]: m for m in _GLUE_FIGURE.finditer(markdown)}
    assert shown == set(pasted), f"{path.name}: glued {sorted(shown)}, pasted {sorted(pasted)}"
    for key, match in pasted.items():
        options = dict(line[1:].split(": ", 1) for line in match["options"].strip().splitlines())
        assert options.get("name", "").startswith("fig-"), f"{key}: no :name: label"
        assert len(options.get("alt", "")) > 40, f"{key}: the alt text is not a description"
        assert options.get("width") == "100%", f"{key}: not drawn at full width"
        assert len(match["caption"]) > 60 and match["caption"].startswith("**"), key
        for cell in nb.cells:
            for tag in cell.metadata.get("tags", []) if f'"{key}"' in cell.source else []:
                assert tag != "remove-cell", f"{key}: its cell is removed, so is the figure"
        if "results-figure" in options.get("figclass", ""):
            assert (
                "{glue:md}`results_md`" in match["caption"] or "results_md" in match["caption"]
            ), f"{key}: the caption does not name the results"
            assert match["caveat"] == key.replace("fig_", "caveat_", 1), (
                f"{key}: no learned-ness caveat pasted after the figure"
            )
            assert f'"{match["caveat"]}"' in code, f"{key}: its caveat is never glued"


# --------------------------------------------------------------------------------------
# Book configuration
# --------------------------------------------------------------------------------------


def test_toc_entries_exist() -> None:
    toc = _load_yaml("_toc.yml")
    assert toc["format"] == "jb-book"
    for entry in book._toc_files(ROOT):
        if entry.startswith(book.EXECUTED_DIR + "/"):
            # executed copies are built; their source notebook must be committed
            source = ROOT / book.NOTEBOOK_DIR / (Path(entry).name + ".ipynb")
            assert source.is_file(), f"_toc.yml lists {entry} but {source} does not exist"
        else:
            candidates = [ROOT / (entry + suffix) for suffix in (".md", ".ipynb", "")]
            assert any(p.is_file() for p in candidates), f"_toc.yml lists missing {entry}"


def test_every_notebook_is_in_the_toc() -> None:
    listed = {Path(e).name for e in book._toc_files(ROOT) if e.startswith(book.EXECUTED_DIR)}
    assert {p.stem for p in NOTEBOOKS} <= listed


def test_config_is_strict_and_offline() -> None:
    config = _load_yaml("_config.yml")
    extensions = config["sphinx"]["extra_extensions"]
    assert "sphinx-mathjax-offline" in extensions, "MathJax must be served locally"
    assert "mod_arch_core.book" in extensions
    assert config["only_build_toc_files"] is True
    assert config["execute"]["execute_notebooks"] == "off", "papermill executes, not the build"
    assert config["execute"]["allow_errors"] is False
    assert config["execute"]["raise_on_error"] is True
    assert config["execute"]["stderr_output"] in {"warn", "remove-warn", "error"}
    assert {"_build", ".venv", "notebooks"} <= set(config["exclude_patterns"])
    assert config["bibtex_bibfiles"] == ["references.bib"]
    assert (ROOT / "references.bib").is_file()
    launch = config["launch_buttons"]
    assert launch["binderhub_url"] == "https://mybinder.org"
    assert launch["colab_url"] == "https://colab.research.google.com"
    assert launch["thebe"] is False, "thebe would fetch its script from a CDN"
    url = config["repository"]["url"]
    assert url == "" or url.startswith("https://"), "one repository setting: empty or a web URL"
    assert "mod_arch_core.coursekit" in extensions, "buttons follow the repository setting"
    assert config["repository"]["branch"] == "main"
    html = config["html"]
    assert not html["analytics"]["google_analytics_id"]
    assert not html["analytics"]["plausible_analytics_domain"]
    assert not html["comments"]["hypothesis"] and not html["comments"]["utterances"]
    extensions_enabled = set(config["parse"]["myst_enable_extensions"])
    assert {"dollarmath", "amsmath", "colon_fence"} <= extensions_enabled
    assert config["sphinx"]["config"]["math_numfig"] is True


def test_bibliography_keys_cited_in_pages_exist() -> None:
    keys = set(re.findall(r"^@\w+\{([^,]+),", (ROOT / "references.bib").read_text(), re.M))
    sources = [*(ROOT / "book").glob("*.md"), *NOTEBOOKS]
    cited = set()
    for path in sources:
        for group in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", path.read_text(encoding="utf-8")):
            cited.update(k.strip() for k in group.split(","))
    assert cited, "no citations found"
    assert cited <= keys, f"cited but not in references.bib: {sorted(cited - keys)}"
    assert {"mittal2022modular", "pfeiffer2023modular"} <= keys


def test_citation_cff_is_valid() -> None:
    cff = _load_yaml("CITATION.cff")
    assert cff["cff-version"] == "1.2.0"
    for key in ("message", "title", "authors", "type", "version", "license", "repository-code"):
        assert cff.get(key), f"CITATION.cff lacks {key}"
    assert cff["type"] == "software"
    for author in cff["authors"]:
        assert author.get("name") or author.get("family-names")
    paper = cff["references"][0]
    assert paper["title"] == "Is a Modular Architecture Enough?"
    assert paper["year"] == 2022
    assert [a["family-names"] for a in paper["authors"]] == ["Mittal", "Bengio", "Lajoie"]
    assert "2206.02713" in paper["url"]
    for reference in cff["references"]:
        assert {"type", "title", "authors"} <= set(reference)


def test_makefile_has_book_targets() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^book: \$\(STAMP\) ## ", makefile, re.M)
    assert "-m mod_arch_core.book all" in makefile
    assert re.search(r"^serve: ## ", makefile, re.M)
    assert "--bind 127.0.0.1 --directory _build/html" in makefile


# --------------------------------------------------------------------------------------
# The pipeline's pieces (mod_arch_core.book)
# --------------------------------------------------------------------------------------


def _fake_project(tmp_path: Path) -> Path:
    (tmp_path / "_config.yml").write_text("title: t\n")
    (tmp_path / "notebooks").mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("profile = 'book'", metadata={"tags": ["parameters"]})]
    nbformat.write(nb, tmp_path / "notebooks" / "01_demo.ipynb")
    (tmp_path / "mod_arch_core").mkdir()
    (tmp_path / "mod_arch_core" / "core.py").write_text("x = 1\n")
    return tmp_path


def test_project_root_is_found_from_a_subfolder() -> None:
    assert book.project_root(ROOT / "book") == ROOT


def test_stamp_changes_with_package_parameters_and_results(tmp_path: Path) -> None:
    root = _fake_project(tmp_path)
    nb = root / "notebooks" / "01_demo.ipynb"
    stamp = book.notebook_stamp(nb, {"profile": "book"}, root)
    assert stamp == book.notebook_stamp(nb, {"profile": "book"}, root)
    assert stamp != book.notebook_stamp(nb, {"profile": "smoke"}, root)
    (root / "mod_arch_core" / "__pycache__").mkdir()
    (root / "mod_arch_core" / "__pycache__" / "core.cpython-311.pyc").write_bytes(b"junk")
    assert stamp == book.notebook_stamp(nb, {"profile": "book"}, root), "bytecode is ignored"
    (root / "mod_arch_core" / "core.py").write_text("x = 2\n")
    changed = book.notebook_stamp(nb, {"profile": "book"}, root)
    assert changed != stamp, "a change in the package must invalidate the cache"
    (root / "results").mkdir()
    (root / "results" / "runs.parquet").write_bytes(b"rows")
    assert book.notebook_stamp(nb, {"profile": "book"}, root) != changed


def test_find_notebooks_by_name(tmp_path: Path) -> None:
    root = _fake_project(tmp_path)
    assert [p.name for p in book.find_notebooks(None, root)] == ["01_demo.ipynb"]
    assert book.find_notebooks(["01_demo.ipynb"], root) == book.find_notebooks(["01_demo"], root)
    with pytest.raises(ValueError, match="unknown notebook 'nope'; available: 01_demo"):
        book.find_notebooks(["nope"], root)


def test_check_profile() -> None:
    assert book.check_profile("smoke") == "smoke"
    with pytest.raises(ValueError, match="profile must be one of smoke, book; got 'huge'"):
        book.check_profile("huge")


def test_tidy_hides_parameters_and_strips_progress_bars() -> None:
    nb = nbformat.v4.new_notebook()
    bar = "100%|██████████| 10/10 [00:01<00:00,  9.87it/s]\r"
    nb.cells = [
        nbformat.v4.new_code_cell("profile = 'book'", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("profile = 'smoke'", metadata={"tags": ["injected-parameters"]}),
        nbformat.v4.new_code_cell(
            "run()",
            outputs=[
                nbformat.v4.new_output("stream", name="stderr", text=bar),
                nbformat.v4.new_output("stream", name="stderr", text="UserWarning: real\n"),
                nbformat.v4.new_output("stream", name="stdout", text="result 3\n"),
            ],
        ),
    ]
    book.tidy_executed_notebook(nb, {"stamp": "abc"})
    assert "remove-cell" in nb.cells[0].metadata["tags"]
    assert "remove-cell" in nb.cells[1].metadata["tags"]
    assert "remove-cell" not in nb.cells[2].metadata.get("tags", [])
    texts = [o["text"] for o in nb.cells[2].outputs]
    assert texts == ["UserWarning: real\n", "result 3\n"], "only the progress bar goes"
    assert nb.metadata["mod_arch_core"] == {"stamp": "abc"}


def test_kernel_runs_this_interpreter() -> None:
    assert Path(book.kernel_python("python3")).resolve() == Path(sys.executable).resolve()


def test_launch_links_point_at_source_notebooks() -> None:
    context = {
        "header_buttons": [
            {
                "type": "group",
                "buttons": [
                    {
                        "url": "https://mybinder.org/v2/gh/o/r/main?urlpath=lab/tree/book/executed/x.ipynb"
                    },
                    {
                        "url": "https://colab.research.google.com/github/o/r/blob/main/book/executed/x.ipynb"
                    },
                ],
            }
        ]
    }
    context["header_buttons"].append(
        {"type": "link", "url": "../../_sources/book/executed/x.ipynb"}
    )
    book._launch_links_to_sources(None, "book/executed/x", "page.html", context, None)
    urls = [b["url"] for b in context["header_buttons"][0]["buttons"]]
    assert urls[0].endswith("urlpath=lab/tree/notebooks/x.ipynb")
    assert urls[1].endswith("/blob/main/notebooks/x.ipynb")
    download = context["header_buttons"][1]["url"]
    assert download == "../../_sources/book/executed/x.ipynb", "downloads keep the executed copy"


def test_build_refuses_missing_executed_chapters(tmp_path: Path) -> None:
    root = _fake_project(tmp_path)
    (root / "_toc.yml").write_text(
        "format: jb-book\nroot: intro\nchapters:\n  - file: book/executed/01_demo\n"
    )
    with pytest.raises(book.BookBuildError, match=r"01_demo\.ipynb is missing"):
        book.build_book(root, verbose=False)


def test_cli_rejects_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        book.main(["publish"])
    assert "invalid choice" in capsys.readouterr().err


# --------------------------------------------------------------------------------------
# The rendered site (slow)
# --------------------------------------------------------------------------------------


class _PageParser(HTMLParser):
    """Collects links, images, scripts, stylesheets, element ids and visible prose text."""

    _SKIP_TEXT = frozenset(
        {"script", "style", "pre", "code", "mjx-container", "math", "svg", "textarea"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []
        self.images: list[str] = []
        self.scripts: list[str] = []
        self.stylesheets: list[str] = []
        self.ids: set[str] = set()
        self.tags: set[str] = set()
        self.text: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.add(tag)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a" and "href" in a:
            self.hrefs.append(a["href"])
        elif tag == "img":
            self.images.append(a.get("src", ""))
        elif tag == "script" and a.get("src"):
            self.scripts.append(a["src"])
        elif tag == "link" and {"stylesheet", "preload", "modulepreload"} & set(
            a.get("rel", "").split()
        ):
            self.stylesheets.append(a.get("href", ""))
        if tag in self._SKIP_TEXT:
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP_TEXT and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.text.append(data)


def _parse(html: str) -> _PageParser:
    parser = _PageParser()
    parser.feed(html)
    return parser


def _is_external(url: str) -> bool:
    return url.startswith(("http://", "https://", "//"))


@pytest.fixture(scope="module")
def built_site() -> Path:
    """Execute (cached) and build the book in place, exactly as ``make book`` does."""
    book.execute_notebooks(profile="book", verbose=False)
    return book.build_book(ROOT, verbose=False)


@pytest.fixture(scope="module")
def site_url(built_site: Path) -> Iterator[str]:

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            if urlsplit(self.path).path == "/" + PROBE_PAGE:  # the layout probe, never on disk
                body = _PROBE_HTML.encode("utf-8")
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            super().do_GET()

    handler = functools.partial(Quiet, directory=str(built_site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _chromium(url: str, *extra: str) -> str:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get update && apt-get install -y chromium)")
    with tempfile.TemporaryDirectory() as profile:
        command = [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",  # no internet
            f"--user-data-dir={profile}",
            "--virtual-time-budget=15000",  # lets MathJax typeset before the dump
            "--window-size=1280,900",
            *extra,
            url,
        ]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"chromium failed on {url}: {proc.stderr[-2000:]}"
    return proc.stdout


def _site_pages(site: Path) -> list[Path]:
    skip = ("_static", "_sources", "_images", "reports", "_downloads")
    return sorted(
        p for p in site.rglob("*.html") if not p.relative_to(site).parts[0].startswith(skip)
    )


@pytest.mark.slow
def test_static_pages_link_and_load_nothing_external(built_site: Path) -> None:
    from mod_arch_core.coursekit import repository_url

    repository = repository_url(ROOT)
    pages = _site_pages(built_site)
    assert any(p.name == "intro.html" for p in pages)
    ids_cache: dict[Path, set[str]] = {}
    for page in pages:
        parsed = _parse(page.read_text(encoding="utf-8"))
        where = page.relative_to(built_site)
        for src in parsed.scripts + parsed.stylesheets:
            assert not _is_external(src), f"{where} loads {src} from the internet"
        for href in parsed.hrefs:
            if _is_external(href) or href.startswith(("mailto:", "javascript:", "data:")):
                continue
            parts = urlsplit(href)
            target = page if not parts.path else (page.parent / unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            assert target.is_file(), f"{where}: link {href!r} points at a missing file"
            if parts.fragment and target.suffix == ".html":
                if target not in ids_cache:
                    ids_cache[target] = _parse(target.read_text(encoding="utf-8")).ids
                assert unquote(parts.fragment) in ids_cache[target], (
                    f"{where}: link {href!r} points at a missing anchor"
                )
        if where.parts[:2] == ("book", "executed"):
            source = f"notebooks/{where.stem}.ipynb"
            launch = [h for h in parsed.hrefs if "mybinder.org" in h or "colab.research" in h]
            if repository is None:
                assert not launch, f"{where}: launch buttons without a repository URL: {launch}"
            else:
                assert len(launch) == 2, f"{where}: Binder and Colab buttons expected"
                assert all(h.endswith(source) for h in launch), f"{where}: {launch}"
                assert all(repository.split("/", 3)[-1] in h for h in launch), launch
        for src in parsed.images:
            assert not _is_external(src), f"{where} loads image {src} from the internet"
            if src.startswith("data:"):
                assert len(src) > 100, f"{where} has an empty inline image"
                continue
            image = (page.parent / unquote(urlsplit(src).path)).resolve()
            assert image.is_file() and image.stat().st_size > 0, f"{where}: image {src} missing"
    assert (built_site / "_static" / "mathjax" / "tex-chtml.js").is_file()


@pytest.mark.slow
def test_pages_render_in_chromium(built_site: Path, site_url: str) -> None:
    pages = _site_pages(built_site)
    shots = built_site.parent / "screenshots"
    shots.mkdir(exist_ok=True)
    for page in pages:
        relative = page.relative_to(built_site).as_posix()
        if relative in {"genindex.html", "search.html"}:
            continue
        static = page.read_text(encoding="utf-8")
        dom = _chromium(f"{site_url}/{relative}", "--dump-dom")
        parsed = _parse(dom)
        if relative == "index.html":  # the redirect to the landing page
            continue
        assert "<main" in dom and "bd-article" in dom, f"{relative} did not load"
        for src in parsed.scripts + parsed.stylesheets:
            local = src.startswith(site_url + "/")
            assert local or not _is_external(src), f"{relative} loaded {src} at run time"
        text = " ".join(parsed.text)
        for raw in ("\\(", "\\[", "$$"):
            assert raw not in text, f"{relative}: raw TeX {raw!r} left in the rendered page"
        if 'class="math' in static:
            assert "mjx-container" in parsed.tags, f"{relative}: MathJax did not typeset"
            assert "mjx-merror" not in parsed.tags, f"{relative}: MathJax reported an error"
    _chromium(f"{site_url}/book/intro.html", f"--screenshot={shots / 'landing.png'}")
    chapter = next(
        (p for p in pages if "executed" in p.parts), built_site / "book" / "survey-map.html"
    )
    relative = chapter.relative_to(built_site).as_posix()
    _chromium(f"{site_url}/{relative}", f"--screenshot={shots / 'chapter.png'}")
    for name in ("landing.png", "chapter.png"):
        assert (shots / name).stat().st_size > 10_000, f"screenshot {name} looks empty"


def test_executed_metadata_roundtrip(tmp_path: Path) -> None:
    """A stored stamp is read back; a failed execution (papermill exception) has none."""
    path = tmp_path / "x.ipynb"
    nb = nbformat.v4.new_notebook(metadata={"mod_arch_core": {"stamp": "s1"}})
    nbformat.write(nb, path)
    assert book._stored_stamp(path) == "s1"
    nb.metadata["papermill"] = {"exception": True}
    nbformat.write(nb, path)
    assert book._stored_stamp(path) is None
    path.write_text(json.dumps({"broken": True}))
    assert book._stored_stamp(path) is None


def test_landing_page_states_the_shipped_scale_next_to_the_papers() -> None:
    from mod_arch_core.profiles import load_profile
    from mod_arch_core.results import SHIPPED_PROFILE

    page = (ROOT / "book" / "intro.md").read_text(encoding="utf-8")
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:4]]
        for line in page.splitlines()
        if line.startswith("| ") and line.count("|") == 4
    }
    shipped, paper = load_profile(SHIPPED_PROFILE), load_profile("paper")
    assert rows["trained runs"] == [f"{shipped.num_runs():,}", f"{paper.num_runs():,}"]
    assert rows["optimizer steps, all runs"] == [
        f"{shipped.total_steps():,}",
        f"{paper.total_steps():,}",
    ]
    configs = next(v for k, v in rows.items() if k.startswith("configurations"))
    assert configs == [f"{len(shipped.configurations()):,}", f"{len(paper.configurations()):,}"]
    steps = rows["steps per run (MLP / MHA / RNN)"]
    for cell, profile in zip(steps, (shipped, paper), strict=True):
        its = profile.iterations
        assert cell == f"{its['mlp']:,} / {its['mha']:,} / {its['rnn']:,}"


# --------------------------------------------------------------------------------------
# Figures, tables and caveats as a reader sees them (slow): a layout probe in Chromium
# --------------------------------------------------------------------------------------

#: Path of the probe page that the test server answers from memory.
PROBE_PAGE = "__layout_probe__.html"
#: Width of the probe's viewport: a common laptop.
PROBE_WIDTH = 1280
#: A sideways-scrolling box taller than this hides its scrollbar below the screen (900 px laptop
#: viewport less the header and some text above the table).
PROBE_SIGHT = 600
#: The probe loads a page of the site in a same-origin iframe of a laptop's width, waits for
#: MathJax, measures every figure, table and display formula of the article, and writes the
#: result as JSON into its own DOM, which ``chromium --dump-dom`` prints.
_PROBE_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>probe</title></head>
<body style="margin:0">
<pre id="probe-result">pending</pre>
<iframe id="frame" style="width:__WIDTH__px;height:900px;border:0"></iframe>
<script>
const target = new URLSearchParams(location.search).get("page");
const SIGHT = __SIGHT__;  // px: the tallest box whose sideways scrollbar a reader still sees
const frame = document.getElementById("frame");
function scroller(el, stop, win) {
  for (let a = el; a && a !== stop; a = a.parentElement) {
    const ox = win.getComputedStyle(a).overflowX;
    if (ox === "auto" || ox === "scroll") return a;
  }
  return null;
}
function measure() {
  const doc = frame.contentDocument, win = frame.contentWindow;
  const art = doc.querySelector("article.bd-article") || doc.querySelector("main");
  const right = art.getBoundingClientRect().right;
  const pad = win.getComputedStyle(art);
  const inner = art.clientWidth - parseFloat(pad.paddingLeft) - parseFloat(pad.paddingRight);
  const out = {figures: [], wide: [], bare_images: [], article_width: inner};
  for (const fig of art.querySelectorAll("figure")) {
    const img = fig.querySelector("img");
    const cap = fig.querySelector("figcaption");
    const link = fig.querySelector("a.image-reference");
    let next = fig.nextElementSibling;
    while (next && next.tagName === "SPAN" && !next.textContent.trim()) next = next.nextElementSibling;
    const caveat = next && next.classList.contains("learned-caveat") ? next : null;
    out.figures.push({
      id: fig.id, classes: fig.className,
      numbered: !!(cap && cap.querySelector(".caption-number")),
      caption: cap ? cap.textContent.replace(/\\s+/g, " ").trim() : "",
      alt: img ? (img.getAttribute("alt") || "") : "",
      width: img ? img.getBoundingClientRect().width : 0,
      link: link ? link.getAttribute("href") : "",
      caveat: caveat ? caveat.textContent.replace(/\\s+/g, " ").trim() : "",
    });
  }
  for (const img of art.querySelectorAll("img")) {
    if (!img.closest("figure")) out.bare_images.push(img.getAttribute("src"));
  }
  const wide = art.querySelectorAll("table, mjx-container[display='true']");
  for (const el of wide) {
    const r = el.getBoundingClientRect();
    const box = scroller(el, art.parentElement, win);
    let clipped = null;
    for (let a = el.parentElement; a && a !== box && a !== art.parentElement; a = a.parentElement) {
      const ox = win.getComputedStyle(a).overflowX;
      if ((ox === "hidden" || ox === "clip") && r.width > a.clientWidth + 1) { clipped = a.className; break; }
    }
    const past = r.right > right + 1;
    // a box that scrolls sideways shows its scrollbar at its bottom: out of sight when the box
    // is taller than the viewport, so a reader sees a table cut off at the right
    const hidden = box && box.scrollWidth > box.clientWidth + 1 && box.clientHeight > SIGHT;
    if (clipped || (past && !box) || hidden) {
      out.wide.push({tag: el.tagName.toLowerCase(), width: Math.round(r.width),
                     text: el.textContent.replace(/\\s+/g, " ").trim().slice(0, 80),
                     clipped_by: clipped, scrolls: !!box,
                     box_height: box ? box.clientHeight : 0});
    }
  }
  document.getElementById("probe-result").textContent = JSON.stringify(out);
}
frame.addEventListener("load", () => {
  const mj = frame.contentWindow.MathJax;
  const ready = mj && mj.startup && mj.startup.promise ? mj.startup.promise : Promise.resolve();
  ready.then(() => setTimeout(measure, 500), () => setTimeout(measure, 500));
});
frame.src = target;
</script></body></html>
""".replace("__WIDTH__", str(PROBE_WIDTH)).replace("__SIGHT__", str(PROBE_SIGHT))

#: Results chapters: the results folder each reads (a results figure there needs its caveat).
RESULTS_PAGES: dict[str, str] = {
    "05_results_performance": "reference",
    "06_results_specialization": "reference",
    "07_results_training_speed": "reference",
    "08_reproduction_report": "reference",
    "09_routing": "routing-quick",
}


def _probe(site_url: str, relative: str) -> dict:
    dom = _chromium(
        f"{site_url}/{PROBE_PAGE}?page=/{relative}",
        "--dump-dom",
        f"--window-size={PROBE_WIDTH + 40},1000",
    )
    match = re.search(r'<pre id="probe-result">(.*?)</pre>', dom, re.S)
    assert match, f"{relative}: the layout probe wrote nothing"
    text = html.unescape(match.group(1))
    assert text != "pending", f"{relative}: the page did not finish loading in the probe"
    return json.loads(text)


def _looks_like_a_path(alt: str) -> bool:
    """Empty, a file name, a hash, or one word with slashes: not a description of a figure."""
    text = alt.strip()
    return bool(
        not text
        or re.search(r"\.(svg|png|jpe?g|gif)$", text, re.I)
        or re.search(r"[0-9a-f]{24,}", text)
        or ("/" in text and " " not in text)
        or len(text.split()) < 5
    )


def _expected_caveat(results: str, scope: str) -> str:
    """The caveat :func:`mod_arch_core.analysis.learned_caveat` gives a figure of this scope."""
    from mod_arch_core import analysis
    from mod_arch_core.results import load

    loaded = load(ROOT / "results" / results)
    by = ("search_version",) if scope.endswith("-by-version") else ()
    cells = analysis.learned(loaded.runs, loaded.curves, by=by)
    names = scope.removeprefix("scope-").removesuffix("-by-version").split("-")
    settings = [n for n in names if n in ("mlp", "mha", "rnn")] or None
    return analysis.learned_caveat(cells, settings=settings)


@pytest.mark.slow
def test_figures_tables_and_caveats_as_a_reader_sees_them(built_site: Path, site_url: str) -> None:
    """Every figure: numbered caption, real alt text, full width, a link to its full SVG; no table
    or formula wider than the text without a scrollbar; every results figure with the caveat that
    ``analysis.learned`` asks for, at a laptop's width (:data:`PROBE_WIDTH` px)."""
    problems: list[str] = []
    seen_results_figures = 0
    for page in _site_pages(built_site):
        relative = page.relative_to(built_site).as_posix()
        if relative in {"genindex.html", "search.html", "index.html"}:
            continue
        found = _probe(site_url, relative)
        for src in found["bare_images"]:
            problems.append(f"{relative}: image {src} is not in a captioned figure")
        for fig in found["figures"]:
            where = f"{relative}#{fig['id']}"
            if not fig["numbered"] or len(fig["caption"]) < 40:
                problems.append(f"{where}: no numbered caption that says what is shown")
            if _looks_like_a_path(fig["alt"]):
                problems.append(f"{where}: alt text {fig['alt']!r} is not a description")
            if "wide-figure" in fig["classes"].split():
                if fig["width"] < 0.95 * found["article_width"]:
                    problems.append(f"{where}: drawn {fig['width']:.0f} px wide, not full width")
                if not fig["link"].endswith(".svg"):
                    problems.append(f"{where}: no click-to-enlarge link to the full SVG")
        for element in found["wide"]:
            how = (
                f"scrolls only at its bottom, {element['box_height']} px down"
                if element["scrolls"]
                else "is cut off"
            )
            problems.append(
                f"{relative}: a {element['tag']} {element['width']} px wide {how} "
                f"({element['text']!r})"
            )
        stem = Path(relative).stem
        if stem in RESULTS_PAGES:
            for fig in found["figures"]:
                classes = fig["classes"].split()
                if "results-figure" not in classes:
                    continue
                seen_results_figures += 1
                scope = next((c for c in classes if c.startswith("scope-")), "scope-all")
                if scope == "scope-example":  # one configuration chosen by a parameter
                    continue
                expected = _expected_caveat(RESULTS_PAGES[stem], scope)
                where = f"{relative}#{fig['id']}"
                if expected and not fig["caveat"]:
                    problems.append(f"{where}: cells have not learned, but no caveat follows")
                elif not expected and fig["caveat"]:
                    problems.append(f"{where}: a caveat although every cell has learned")
                for listed in re.findall(r"[A-Z]{3} \w+ \(R = [0-9, ]+\)", expected):
                    if listed not in fig["caveat"]:
                        problems.append(f"{where}: the caveat does not name {listed}")
    assert seen_results_figures >= 15, f"only {seen_results_figures} results figures found"
    assert not problems, "\n".join(problems)
