"""The README stays a front page, and every link in it and in docs/ leads somewhere (no model needed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
README_MAX_LINES = 200

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)
FENCE = re.compile(r"^(```|~~~)")


def prose(text: str) -> str:
    """The page without its fenced and indented code blocks and inline code, where links are not links."""
    kept, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if fenced or line.startswith("    "):
            continue
        kept.append(re.sub(r"`[^`]*`", "", line))
    return "\n".join(kept)


def links(page: Path) -> list[str]:
    return LINK.findall(prose(page.read_text(encoding="utf-8")))


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for the page's headings: lower case, punctuation dropped, spaces to hyphens."""
    found, counts = set(), {}
    for line in prose(page.read_text(encoding="utf-8")).splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
            found.add(slug if slug not in counts else f"{slug}-{counts[slug]}")
            counts[slug] = counts.get(slug, 0) + 1
    return found


def relative(target: str) -> bool:
    return not re.match(r"^[a-z][a-z0-9+.-]*:", target)  # http:, https:, mailto: ...


def test_readme_is_at_most_200_lines():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; keep it to {README_MAX_LINES}"


def test_readme_opens_with_the_two_commands():
    opening = "\n".join(README.read_text(encoding="utf-8").splitlines()[:10])
    assert re.search(r"^make run\b", opening, re.M), "the README's first lines should show `make run`"
    assert re.search(r"^make test\b", opening, re.M), "the README's first lines should show `make test`"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_relative_links_resolve(page: Path):
    broken = []
    for target in filter(relative, links(page)):
        path, _, anchor = target.partition("#")
        destination = (page.parent / path).resolve() if path else page
        if not destination.exists():
            broken.append(f"{target}: no file {destination.relative_to(ROOT) if ROOT in destination.parents else destination}")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: no heading #{anchor} in {destination.name}")
    assert not broken, f"{page.name} has broken links:\n" + "\n".join(broken)


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in filter(relative, links(README))}
    missing = [page.name for page in DOCS if page.resolve() not in linked]
    assert not missing, f"README.md does not link {missing}"


def headings(page: Path) -> set[str]:
    return {match.group(1) for match in re.finditer(r"^#{1,6}\s+(.*?)\s*$", prose(page.read_text(encoding="utf-8")), re.M)}


def code_pointers(text: str) -> list[tuple[str, str]]:
    """(page, heading) of every `docs/PAGE.md, "Heading"` in source, a pointer split over comment lines included."""
    joined = re.sub(r"\n\s*#?\s*", " ", text)
    return re.findall(r"(docs/[\w.-]+\.md),\s*\"([^\"]+)\"", joined)


def test_code_comments_point_at_headings_that_exist():
    broken = []
    for source in sorted([*(ROOT / "src").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py")]):
        for page, heading in code_pointers(source.read_text(encoding="utf-8")):
            if not (ROOT / page).is_file():
                broken.append(f"{source.relative_to(ROOT)}: {page} does not exist")
            elif heading not in headings(ROOT / page):
                broken.append(f"{source.relative_to(ROOT)}: {page} has no heading {heading!r}")
    assert not broken, "code comments point at missing docs sections:\n" + "\n".join(broken)


def test_the_link_checker_catches_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A heading\n\n[ok](#a-heading) [bad](#no-such) [gone](missing.md) `[code](x.md)`\n")
    assert links(page) == ["#a-heading", "#no-such", "missing.md"]
    assert anchors(page) == {"a-heading"}
    assert code_pointers('x = 1  # see (docs/a.md,\n    # "Two words")') == [("docs/a.md", "Two words")]


def code_lines(page: Path) -> list[str]:
    """The lines of the page's fenced code blocks."""
    lines, fenced = [], False
    for line in page.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
        elif fenced:
            lines.append(line)
    return lines


def test_every_signs_command_in_the_docs_exists_with_its_options():
    """Each `signs SUBCOMMAND --option` written in a code block of the README or docs/ is one the CLI has."""
    from signs_resnet.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    wrong, checked = [], 0
    for page in PAGES:
        for line in code_lines(page):
            for match in re.finditer(r"(?:^|[\s/$])signs (\w[\w-]*)([^|#;&]*)", line):
                name, rest = match.groups()
                if name not in commands:
                    wrong.append(f"{page.name}: {line.strip()}: no command {name!r}")
                    continue
                known = {option for action in commands[name]._actions for option in action.option_strings}
                for option in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", rest):
                    checked += 1
                    if option not in known:
                        wrong.append(f"{page.name}: {line.strip()}: `signs {name}` has no {option}")
    assert checked > 10 and wrong == []


def test_the_readme_python_example_runs_as_written(tmp_path, uniform_model_file, sample_jpg):
    """The README's Python block, run in a folder holding runs/default/model.safetensors and sample.jpg, prints
    what it says: "5 True" (the model's network answers every class alike, so the answer is the hand's count of
    five fingers, at a threshold of 0.5)."""
    import subprocess
    import sys

    [block] = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    (tmp_path / "runs" / "default").mkdir(parents=True)
    (tmp_path / "runs" / "default" / "model.safetensors").symlink_to(uniform_model_file)
    (tmp_path / "sample.jpg").symlink_to(sample_jpg)
    result = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, cwd=tmp_path,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["5", "True"]
    assert re.search(r"^print\(answer\.label, answer\.confident\) +# 5 True$", block, re.M)  # as the README says


def test_the_tritonclient_examples_in_api_md_run_against_the_server(server, sample_jpg, tmp_path):
    """docs/api.md's Python blocks (tritonclient over REST, then gRPC), pointed at the test server's ports."""
    import subprocess
    import sys

    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "api.md").read_text(encoding="utf-8"), re.S)
    blocks = [block for block in blocks if "tritonclient" in block]  # the /stream client: tests/test_stream.py
    assert len(blocks) == 2 and "tritonclient.http" in blocks[0] and "tritonclient.grpc" in blocks[1]
    (tmp_path / "sample.jpg").symlink_to(sample_jpg)
    printed = []
    for block in blocks:
        code = block.replace("localhost:5000", server.url.removeprefix("http://"))
        code = code.replace("localhost:8001", server.grpc_address)
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                                timeout=120, check=False)
        assert result.returncode == 0, result.stderr
        printed.append(result.stdout.splitlines())
    assert printed[0][0][0] in "012345" and printed[0][1] == "(2, 6)"
    assert printed[1][0] == "True True" and printed[1][1][0] in "012345"
