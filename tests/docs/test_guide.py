"""The guide (docs/, mkdocs.yml) cannot rot: it builds strictly in both languages, its Python
runs, its commands parse, the errors it quotes are the ones gradsync prints, and its measured
numbers come from results files (tools/guide_numbers.py), never typed by hand."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gradsync.cli import COMMANDS, build_parser
from gradsync.core.args import config_from_args

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
GRADSYNC = str(Path(sys.executable).with_name("gradsync"))
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)

spec = importlib.util.spec_from_file_location("guide_numbers", ROOT / "tools" / "guide_numbers.py")
guide_numbers = importlib.util.module_from_spec(spec)
spec.loader.exec_module(guide_numbers)


def english_pages() -> list[Path]:
    """The site's pages, as mkdocs.yml's nav lists them (the strict build fails on a page left out)."""

    def walk(node: object) -> list[str]:
        if isinstance(node, str):
            return [node]
        items = node.values() if isinstance(node, dict) else node
        return [page for item in items for page in walk(item)]

    return sorted(DOCS / page for page in walk(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]))


def chinese(page: Path) -> Path:
    return page.with_name(page.stem + ".zh.md")


def blocks(page: Path, lang: str) -> list[str]:
    return [body for kind, body in FENCE.findall(page.read_text(encoding="utf-8")) if kind == lang]


def page_id(page: Path) -> str:
    return str(page.relative_to(DOCS))


def without_comments(code: str) -> list[str]:
    lines = [re.sub(r"\s+#.*$", "", ln).rstrip() for ln in code.splitlines()]
    return [ln for ln in lines if ln and not ln.lstrip().startswith("#")]


def test_site_builds_strictly_in_both_languages(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    for page in english_pages():
        rel = page.relative_to(DOCS)
        html = rel.parent / "index.html" if rel.stem == "index" else rel.with_suffix("") / "index.html"
        assert (tmp_path / "site" / html).is_file(), html
        assert (tmp_path / "site" / "zh" / html).is_file(), f"zh/{html}"
    # renders anywhere: every formula is MathML already, and nothing is fetched from another host
    loads = re.compile(
        r"<(?:script|img|iframe|source)\b[^>]*\bsrc=\"(?:https?:)?//|<link\b[^>]*\bhref=\"(?:https?:)?//"
    )
    for built in (tmp_path / "site").rglob("*.html"):
        text = built.read_text(encoding="utf-8")
        assert not loads.search(text), f"{built.relative_to(tmp_path)} loads from another host"
        assert 'class="arithmatex"' not in text, f"{built.relative_to(tmp_path)} still holds TeX for a script"
    # a wrapped Chinese sentence reads without a gap where its source line broke
    cjk_break = re.compile(r"[\u4e00-\u9fff，。：；、（）]\n+[\u4e00-\u9fff，。：；、（）]")
    for built in (tmp_path / "site" / "zh").rglob("*.html"):
        for _, para in re.findall(r"<(p|li|td)>(.*?)</\1>", built.read_text(encoding="utf-8"), flags=re.S):
            gaps = cjk_break.findall(re.sub(r"<[^>]+>", "", para))
            assert not gaps, f"{built.relative_to(tmp_path)}: a line break inside Chinese text: {gaps}"
    math = (tmp_path / "site" / "guide" / "math" / "index.html").read_text(encoding="utf-8")
    assert math.count("<math") > 100, "the math chapter's formulas were not rendered"


@pytest.mark.parametrize("page", english_pages(), ids=page_id)
def test_every_page_has_a_complete_translation(page: Path) -> None:
    zh = chinese(page)
    assert zh.is_file(), f"{page_id(page)} has no Chinese page {zh.name}"
    en_text, zh_text = page.read_text(encoding="utf-8"), zh.read_text(encoding="utf-8")
    heading = re.compile(r"^#{1,4} ", re.M)
    assert len(heading.findall(zh_text)) == len(heading.findall(en_text)), "same sections"
    for lang in ("python", "bash", "console"):
        assert [without_comments(b) for b in blocks(zh, lang)] == [without_comments(b) for b in blocks(page, lang)], (
            f"same {lang} blocks"
        )
    assert sorted(guide_numbers.PLACEHOLDER.findall(zh_text)) == sorted(guide_numbers.PLACEHOLDER.findall(en_text)), (
        "the same measured numbers"
    )
    images = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")
    assert images.findall(zh_text) == images.findall(en_text), "the same plots"
    # a translation, not a summary: Chinese runs about 0.3-0.6 characters per English one
    assert len(zh_text) > 0.25 * len(en_text)


PY_PAGES = [p for p in english_pages() if blocks(p, "python")]


@pytest.mark.parametrize("page", PY_PAGES, ids=page_id)
def test_python_blocks_run(page: Path, tmp_path: Path) -> None:
    """A page's Python blocks run in order in one fresh interpreter from the repository's root, as a
    reader would paste them (blocks that write files write them to a temporary folder)."""
    code = "\n\n".join(f"# ---- block {i + 1}\n{b}" for i, b in enumerate(blocks(page, "python")))
    script = tmp_path / "page.py"
    script.write_text(code, encoding="utf-8")
    out = subprocess.run(
        [sys.executable, str(script)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, f"{page_id(page)}:\n{out.stderr[-3000:]}"


def gradsync_commands() -> list[tuple[str, str]]:
    found = []
    for page in english_pages() + [ROOT / "README.md"]:
        for body in blocks(page, "bash"):
            for line in body.replace("\\\n", " ").splitlines():
                line = re.sub(r"\s+#.*$", "", line).strip()
                for part in re.split(r"&&|\|", line):
                    part = part.strip()
                    if re.match(r"^(?:\S*/)?gradsync \w", part):
                        found.append((str(page.relative_to(ROOT)), part[part.index("gradsync") :]))
    return found


COMMAND_LINES = gradsync_commands()


@pytest.mark.parametrize("where,cmd", COMMAND_LINES, ids=[c for _, c in COMMAND_LINES])
def test_gradsync_commands_in_the_guide_parse(where: str, cmd: str) -> None:
    """Every ``gradsync ...`` line of a bash block (guide and README) names real flags and valid
    values, and a training configuration that validates (a world size that divides the batch)."""
    argv = shlex.split(cmd)[1:]
    assert argv[0] in COMMANDS, f"{where}: {cmd}"
    parser = build_parser(argv[0])
    try:
        ns, extra = parser.parse_known_args(argv[1:])
    except SystemExit:
        pytest.fail(f"{where}: `{cmd}` does not parse")
    if argv[0] == "train" and "--config" not in argv:
        config_from_args(ns, extra)  # raises with gradsync's one line on a bad value or key
    elif argv[0] not in ("train", "run", "config"):
        assert not extra, f"{where}: `{cmd}`: unknown arguments {extra}"


def console_examples() -> list[tuple[str, str, list[str]]]:
    found = []
    for page in english_pages():
        for body in blocks(page, "console"):
            for chunk in re.split(r"^\$ ", body, flags=re.M)[1:]:
                cmd, *expected = chunk.rstrip("\n").split("\n")
                found.append((page_id(page), cmd, expected))
    return found


CONSOLE_EXAMPLES = console_examples()


@pytest.mark.parametrize("where,cmd,expected", CONSOLE_EXAMPLES, ids=[c for _, c, _ in CONSOLE_EXAMPLES])
def test_console_examples_print_what_the_guide_shows(where: str, cmd: str, expected: list[str], tmp_path: Path) -> None:
    argv = shlex.split(cmd)
    assert argv[0] == "gradsync", f"{where}: console examples are gradsync commands"
    out = subprocess.run([GRADSYNC, *argv[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    printed = out.stdout + out.stderr
    for line in expected:
        assert line in printed, f"{where}: `{cmd}` no longer prints:\n{line}\nit printed:\n{printed[-2000:]}"


# a decimal with a unit of measurement, a ratio ("1.46×", not the product "2 × 2"), a throughput
MEASURED = re.compile(
    r"\d[\d,]*\.\d+\s?(?:ms|s\b|%|x\b|MiB|MB|GB|GiB|nats|tokens/s)"
    r"|\d[\d,]*\.\d+\s?×(?!\s*\d)|\d[\d,]{3,}\s?tokens/s"
)


@pytest.mark.parametrize("page", english_pages() + [chinese(p) for p in english_pages()], ids=page_id)
def test_no_measured_number_is_typed_by_hand(page: Path) -> None:
    """Figures with units of measurement come from placeholders filled from results files."""
    text = page.read_text(encoding="utf-8")
    text = FENCE.sub(lambda m: "" if m.group(1) in ("python", "bash", "console") else m.group(0), text)
    text = guide_numbers.PLACEHOLDER.sub("", text)
    text = re.sub(r"`[^`\n]*`|\$\$.*?\$\$|\$[^$\n]*\$|\]\([^)]*\)", "", text, flags=re.S)
    typed = MEASURED.findall(text)
    assert not typed, f"{page_id(page)}: type these via docs/numbers.yml: {typed}"


def test_every_registered_number_resolves_and_has_its_command() -> None:
    names = guide_numbers.registry(DOCS)
    used = set()
    for page in english_pages():
        used |= {b for k, b in guide_numbers.PLACEHOLDER.findall(page.read_text(encoding="utf-8")) if not k}
    for spec in names.values():  # names an expression reads are used too
        used |= set(guide_numbers.expr_names(spec.get("expr", ""))) & set(names)
    assert used <= set(names), f"placeholders with no entry: {sorted(used - set(names))}"
    assert set(names) <= used, f"entries no page uses: {sorted(set(names) - used)}"
    for name, spec in names.items():
        guide_numbers.value(name, DOCS)
        if "expr" not in spec:
            assert guide_numbers.command(name, DOCS).strip(), name


def test_numbers_are_read_from_the_file_not_typed(tmp_path: Path) -> None:
    (tmp_path / "t.md").write_text(
        "command: `bench --x`\n\n| strategy | step ms |\n|---|---|\n| a | 1,234.5 |\n| b | 600.0 |\n| b | 7 |\n",
        encoding="utf-8",
    )
    (tmp_path / "r.json").write_text('{"command": "cal", "rows": [{"s": "a", "t": 0.25}]}', encoding="utf-8")
    (tmp_path / "numbers.yml").write_text(
        "a_ms: {file: t.md, match: {strategy: a}, col: step ms}\n"
        "b_ms: {file: t.md, match: {strategy: b}, col: step ms}\n"
        "t_ms: {file: r.json, path: rows, match: {s: a}, field: t, scale: 1000, format: '{:.0f}'}\n"
        "ratio: {expr: a_ms / t_ms, format: '{:.2f}×'}\n",
        encoding="utf-8",
    )
    guide_numbers.registry.cache_clear()
    try:
        assert (
            guide_numbers.render("{{ a_ms }} ms, {{ t_ms }} ms, {{ ratio }}; {{ command: t_ms }}", tmp_path)
            == "1,234.5 ms, 250 ms, 4.94×; `cal`"
        )
        assert guide_numbers.command("a_ms", tmp_path) == "bench --x"
        with pytest.raises(guide_numbers.NumberError, match="2 rows match"):
            guide_numbers.value("b_ms", tmp_path)
        with pytest.raises(guide_numbers.NumberError, match="no such number"):
            guide_numbers.render("{{ nope }}", tmp_path)
    finally:
        guide_numbers.registry.cache_clear()


def test_readme_links_point_at_files_that_exist() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    links = [m for m in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text) if "://" not in m]
    assert links, "the README links into the guide"
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_the_readme_own_loop_is_the_script_the_suite_runs() -> None:
    """The README's own-loop block is examples/own_loop.py's, line for line; tests/e2e runs that
    script with 2 workers, stops it mid-epoch and resumes it."""
    (block,) = [b for b in blocks(ROOT / "README.md", "python") if "gradsync.parallelize" in b]
    script = (ROOT / "examples" / "own_loop.py").read_text(encoding="utf-8")
    assert block.strip() in script
    assert "DataLoader(" in block and "lr_scheduler" in block and "torch.optim.AdamW(" in block


def test_formulas_become_mathml_and_bad_tex_names_itself() -> None:
    spec = importlib.util.spec_from_file_location("mathml", ROOT / "tools" / "mathml.py")
    mathml = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mathml)
    page = '<p>cost <span class="arithmatex">\\(a &lt; b\\)</span></p><div class="arithmatex">\\[\\frac{1}{N}\\]</div>'
    out = mathml.render(page)
    assert "arithmatex" not in out and out.count("<math") == 2
    assert "<mo>&#x0003C;</mo>" in out and 'display="block"' in out and "<mfrac>" in out  # &lt; read as <
    with pytest.raises(mathml.FormulaError, match="cannot render"):
        mathml.render('<span class="arithmatex">\\(\\left( a\\)</span>')
    with pytest.raises(mathml.FormulaError, match="unknown command .nosuchmacro"):
        mathml.render('<span class="arithmatex">\\(\\nosuchmacro x\\)</span>')


def test_every_figure_is_drawn_by_the_script_the_guide_names(tmp_path: Path) -> None:
    """The conceptual figures come from gradsync's functions (tools/guide_figures.py): the script
    runs, draws every committed figure, and each one appears in both languages of the guide."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "guide_figures.py"), "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    drawn = sorted(p.name for p in tmp_path.glob("*.png"))
    assert drawn == sorted(p.name for p in (DOCS / "figures").glob("*.png")), "docs/figures is what the script draws"
    pages = [p.read_text(encoding="utf-8") for p in (DOCS / "guide").glob("*.md")]
    for name in drawn:
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
        used = [t for t in pages if f"../figures/{name}" in t]
        assert len(used) >= 2, f"{name} is not shown in both languages"


def test_wrapped_chinese_lines_join_without_a_space() -> None:
    spec = importlib.util.spec_from_file_location("cjk_lines", ROOT / "tools" / "cjk_lines.py")
    cjk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cjk)
    text = "每种\n策略需要多少显存，\n吞吐量\nscales with N\n\n新段落\n```python\n# 代码\n# 不动\n```\n"
    joined = "每种策略需要多少显存，吞吐量\nscales with N\n\n新段落\n```python\n# 代码\n# 不动\n```\n"
    assert cjk.join_lines(text) == joined
    marked = "见\n[附录](faq.md)，**显存**\n不足，\n**注意**"
    assert cjk.join_lines(marked) == "见[附录](faq.md)，**显存**不足，**注意**"
