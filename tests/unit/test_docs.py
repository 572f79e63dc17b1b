"""The project's own documentation (README.md and docs/*.md) as a reader follows it: every relative link and
``#anchor`` lands on a file and a heading that exist, every path named in backticks is in the repository, and the
README still shows the two commands a new user starts with."""

from __future__ import annotations

import json
import re
import tempfile
import typing
from functools import cache
from pathlib import Path

import pytest
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from shipml.adapters.store import PredictionStore
from shipml.config import Settings
from tests.support.markdown import github_anchor

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# where the files a page may name live (not .venv, caches or state)
TRACKED_DIRS = ("src", "tests", "deploy", "examples", "bench", "docs", "requirements", ".ci")

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"(?<!!)\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
# a path in backticks: words joined by slashes ending in a source file's name (``core/drift.py``), or a folder of
# two names or more (``adapters/store/``; a lone ``model/`` is as often a folder of a run's artifacts as of the code)
PATH = re.compile(r"^(?:[\w.-]+/)+[\w-][\w.-]*\.(?:py|c|ya?ml|md|toml|txt|cfg|ini|sh)$|^[\w.-]+/(?:[\w.-]+/)+$")


def prose(text: str) -> str:
    """The page without its fenced code blocks (a ``# comment`` in a shell block is not a heading)."""
    return FENCE.sub("", text)


@cache
def anchors(page: Path) -> frozenset[str]:
    """Every heading's anchor on a page, the second of a repeated heading getting ``-1`` as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", prose(page.read_text()), flags=re.MULTILINE):
        anchor = github_anchor(heading.replace("`", ""))
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        found.add(anchor if count == 0 else f"{anchor}-{count}")
    return frozenset(found)


@cache
def repository_paths() -> frozenset[str]:
    """Every file and directory of the repository a page may name, relative to its root."""
    paths = {p.name for p in REPO.iterdir() if p.is_file()}
    for top in TRACKED_DIRS:
        for p in (REPO / top).rglob("*"):
            if "__pycache__" not in p.parts:
                paths.add(p.relative_to(REPO).as_posix())
        paths.add(top)
    return frozenset(paths)


def names_a_path(word: str) -> bool:
    """Whether a word of a code span is a path of the repository's (``deploy/Dockerfile``, ``core/drift.py``)."""
    return word.startswith(tuple(d + "/" for d in TRACKED_DIRS)) or PATH.match(word) is not None


def names_a_repository_path(token: str) -> bool:
    """``src/shipml/core/drift.py``, ``shipml/core/drift.py``, ``core/drift.py`` and ``adapters/store/`` each name
    the same kind of thing: the end of a path in the repository (a path is matched whole components at a time)."""
    wanted = token.rstrip("/")
    return any(path == wanted or path.endswith("/" + wanted) for path in repository_paths())


def relative_links(page: Path) -> list[str]:
    return [t for t in LINK.findall(prose(page.read_text())) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


def ids(pages: list[Path]) -> list[str]:
    return [p.relative_to(REPO).as_posix() for p in pages]


def broken_links(page: Path) -> list[str]:
    """Each relative link of a page whose file, or whose heading for its ``#anchor``, does not exist."""
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and (linked.suffix != ".md" or anchor not in anchors(linked)):
            broken.append(f"{target}: no heading with the anchor #{anchor} in {linked.name}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=ids(PAGES))
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    broken = broken_links(page)
    assert not broken, f"{page.relative_to(REPO)}: broken links:\n" + "\n".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=ids(PAGES))
def test_every_path_in_backticks_exists(page: Path) -> None:
    tokens = {
        word for span in CODE_SPAN.findall(prose(page.read_text())) for word in span.split() if names_a_path(word)
    }
    missing = sorted(t for t in tokens if not names_a_repository_path(t))
    assert not missing, f"{page.relative_to(REPO)} names paths the repository does not have: {missing}"


def test_the_readme_shows_the_two_commands() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## The two commands", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block is not None, "README.md: the two commands are not in a bash block under '## The two commands'"
    commands = [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()]
    assert "make quickstart" in commands and "make test" in commands


def test_every_page_of_docs_is_linked_from_the_readme() -> None:
    linked = {(REPO / t.partition("#")[0]).resolve() for t in relative_links(REPO / "README.md")}
    orphans = [p.name for p in PAGES[1:] if p.resolve() not in linked]
    assert not orphans, f"docs/ pages the README does not link: {orphans}"


def test_the_checks_catch_a_broken_link_and_a_missing_path(tmp_path: Path) -> None:
    """The rules above, on a page made to break them: a missing file, a missing anchor, a missing module."""
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n## Two words\n\n```bash\n# not a heading\n```\n\n"
        "[ok](#two-words) [gone](nowhere.md) [bad anchor](#not-a-heading) [web](https://example.com/x.md)\n"
    )
    assert anchors(page) == {"title", "two-words"}
    assert relative_links(page) == ["#two-words", "nowhere.md", "#not-a-heading"]
    assert broken_links(page) == [
        "nowhere.md: no such file",
        "#not-a-heading: no heading with the anchor #not-a-heading in page.md",
    ]
    assert names_a_repository_path("src/shipml/core/window.py") and names_a_repository_path("core/window.py")
    assert names_a_repository_path("adapters/store/") and names_a_repository_path("deploy/prometheus/rules.yml")
    assert not names_a_repository_path("core/no_such_module.py") and not names_a_repository_path("shipml/profile.json")


# Names in backticks that look like a setting but are not one: the answer's field `model.variant`, and the parts of
# the prediction store as code names them (`store.leases`, `store.predictions.read_window`).
NOT_SETTINGS = {"model.variant"}


@cache
def store_parts() -> frozenset[str]:
    """The parts of the prediction store's facade (``predictions``, ``leases``, ...), as a store opened has them."""
    with tempfile.TemporaryDirectory() as home:
        store = PredictionStore(f"sqlite:///{home}/predictions.db")
        try:
            return frozenset(name for name in vars(store) if name not in ("uri", "database"))
        finally:
            store.close()


def a_store_part(word: str) -> bool:
    return any(word == f"store.{part}" or word.startswith(f"store.{part}.") for part in store_parts())


def default_text(value: object) -> str:
    """A default as the reference's table writes it (without its backticks)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(getattr(value, "value", value))  # an enum by its value


def setting_defaults(
    model: type[BaseModel] = Settings, prefix: str = "", given: object = None
) -> dict[str, str | None]:
    """Every key of the configuration as the reference writes it (``serve.variants[].weight`` for an entry of a
    list, ``training.gates.<metric>.min`` for a value of a mapping) with its default: ``required``, the value, or
    None for a section (``given`` is the section's own default, e.g. ``auth.failure_limit``'s 5 a second)."""
    found: dict[str, str | None] = {}
    for name, field in model.model_fields.items():
        key = prefix + name
        if isinstance(given, BaseModel):
            default: object = getattr(given, name)
        elif field.is_required():
            default = PydanticUndefined
        else:
            default = field.get_default(call_default_factory=True)
        found[key] = "required" if default is PydanticUndefined else default_text(default)
        inner, marker = [field.annotation], ""
        while inner:
            kind = inner.pop()
            origin = typing.get_origin(kind)
            marker = "[]" if origin in (list, tuple) else ".<metric>" if origin is dict else marker
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                found[key] = found[key + marker] = None
                found |= setting_defaults(kind, key + marker + ".", default)
                break
            inner.extend(typing.get_args(kind))
    return found


def setting_keys() -> set[str]:
    return set(setting_defaults())


def settings_named(page: Path) -> set[str]:
    """The words of a page's code spans that name a configuration key (``monitor.drift.*``, ``auth.keys[].burst:``)."""
    sections = tuple(f"{name}." for name in Settings.model_fields) + tuple(
        f"{name}[]" for name in Settings.model_fields
    )
    words = {w.rstrip(":,") for span in CODE_SPAN.findall(prose(page.read_text())) for w in span.split()}
    files = re.compile(r"\.(csv|parquet|json|ya?ml|py|md|db|html)$")  # data.csv, validation.json: file names
    named = {w.removesuffix(".*") for w in words if w.startswith(sections) and not files.search(w)} - NOT_SETTINGS
    return {w for w in named if w in setting_keys() or not a_store_part(w)}


@pytest.mark.parametrize("page", PAGES, ids=ids(PAGES))
def test_every_setting_a_page_names_exists(page: Path) -> None:
    unknown = sorted(settings_named(page) - setting_keys())
    assert not unknown, f"{page.relative_to(REPO)} names settings that shipml.config does not have: {unknown}"


def test_every_setting_is_in_the_configuration_reference() -> None:
    """docs/configuration.md has a row for every key, with its default: a setting added to shipml.config, or a
    default changed, changes its row there."""
    reference = REPO / "docs" / "configuration.md"
    table = dict(re.findall(r"^\| `([^`]+)` \| ([^|]*) \|", reference.read_text(), flags=re.MULTILINE))
    rows, keys = set(table), setting_keys()
    leaves = {k for k in keys if not any(other.startswith((k + ".", k + "[]")) for other in keys)}
    missing = sorted(leaves - rows)
    assert not missing, f"docs/configuration.md: add a row (key, default, what) for {missing}"
    assert rows <= keys, f"docs/configuration.md: rows for settings that do not exist: {sorted(rows - keys)}"
    defaults = setting_defaults()
    stale = {k: (v, defaults[k]) for k, v in table.items() if (v.strip().strip("`") or None) != defaults[k]}
    assert not stale, f"docs/configuration.md: defaults (written, actual) that differ from shipml.config: {stale}"
