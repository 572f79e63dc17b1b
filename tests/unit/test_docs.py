"""The project's own documentation (README.md and docs/*.md) as a reader follows it: every relative link and
``#anchor`` lands on a file and a heading that exist; every path, class, member, alert and setting a page names in
its code exists; the configuration reference lists every setting with its true default; and the README still shows
the two commands a new user starts with."""

from __future__ import annotations

import builtins
import fnmatch
import json
import re
import tempfile
import typing
from functools import cache
from pathlib import Path

import pytest
import yaml
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
    the same kind of thing: the end of a path in the repository (a path is matched whole components at a time).
    A glob names the paths it matches."""
    wanted = token.rstrip("/")
    if "*" in wanted:  # a shell's glob (``deploy/k8s/*.yaml``): it names the paths it matches, at least one
        return any(
            fnmatch.fnmatchcase(path, wanted) or fnmatch.fnmatchcase(path, "*/" + wanted) for path in repository_paths()
        )
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


def code_words(page: Path) -> set[str]:
    """The words of a page's code: its code spans and its code blocks (the diagrams), without the punctuation
    around them (``(server/hosts.py)``, ``core/drift.py,``)."""
    text = page.read_text()
    code = CODE_SPAN.findall(prose(text)) + [m.group(0) for m in FENCE.finditer(text)]
    return {word.strip("()[],:;") for chunk in code for word in chunk.split()}


@pytest.mark.parametrize("page", PAGES, ids=ids(PAGES))
def test_every_path_a_page_names_exists(page: Path) -> None:
    missing = sorted(w for w in code_words(page) if names_a_path(w) and not names_a_repository_path(w))
    assert not missing, f"{page.relative_to(REPO)} names paths the repository does not have: {missing}"


# Capitalised words in code that are not shipml's classes: an example feature name, JSON's non-finite numbers,
# the web framework.
NOT_CLASSES = {"Age", "NaN", "Infinity", "FastAPI"}


@cache
def defined_names() -> frozenset[str]:
    """Every class and module-level name defined in the package (what a page may call ``PredictionStore``)."""
    source = "\n".join(p.read_text() for p in (REPO / "src" / "shipml").rglob("*.py"))
    classes = re.findall(r"^\s*class (\w+)", source, flags=re.MULTILINE)
    assigned = re.findall(r"^(\w+)\s*[:=]", source, flags=re.MULTILINE)
    return frozenset(classes + assigned + dir(builtins))


@cache
def defined_members() -> frozenset[str]:
    """Every method and attribute defined in the package (what ``ModelManager.set_canary`` may name)."""
    source = "\n".join(p.read_text() for p in (REPO / "src" / "shipml").rglob("*.py"))
    methods = re.findall(r"^\s+(?:async )?def (\w+)", source, flags=re.MULTILINE)
    fields = re.findall(r"^\s+(\w+)\s*[:=]", source, flags=re.MULTILINE) + re.findall(r"self\.(\w+)\s*=", source)
    return frozenset(methods + fields)


def member_names(page: Path) -> set[str]:
    """The attributes a page names on a class, as in ``PredictionService.run``."""
    spans = CODE_SPAN.findall(prose(page.read_text()))
    return {m.group(1) for s in spans if (m := re.fullmatch(r"[A-Z]\w*[a-z]\w*\.(\w+)(?:\(.*\))?", s))}


def class_names(page: Path) -> set[str]:
    """The names of classes a page mentions: a code span that is one (``ModelManager``, ``Canary``, with an
    attribute or a call: ``ModelManager.set_canary``), or a CamelCase word in a code block's diagram."""
    text = page.read_text()
    spans = CODE_SPAN.findall(prose(text))
    named = {m.group(1) for s in spans if (m := re.fullmatch(r"([A-Z]\w*[a-z]\w*)(?:\.\w+)?(?:\(.*\))?", s))}
    for block in FENCE.finditer(text):
        named |= set(re.findall(r"\b[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]*)+\b", block.group(0)))
    return named - NOT_CLASSES


@pytest.mark.parametrize("page", PAGES, ids=ids(PAGES))
def test_every_class_and_alert_a_page_names_exists(page: Path) -> None:
    rules = yaml.safe_load((REPO / "deploy" / "prometheus" / "rules.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"] if "alert" in rule}
    missing = sorted(class_names(page) - defined_names() - alerts) + sorted(member_names(page) - defined_members())
    assert not missing, (
        f"{page.relative_to(REPO)} names classes or members src/shipml does not define, or alerts rules.yml lacks: {missing}"
    )


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
    page.write_text(
        page.read_text()
        + "\n`ModelManager.set_canary` `NoSuchClass` `ShipmlNoSuchAlert`\n```\nA ──► HostGuard (server/hosts.py)\n```\n"
    )
    assert class_names(page) == {"ModelManager", "NoSuchClass", "ShipmlNoSuchAlert", "HostGuard"}
    assert "server/hosts.py" in code_words(page)
    assert "NoSuchClass" not in defined_names() and "ModelManager" in defined_names()
    assert member_names(page) == {"set_canary"} and "set_canary" in defined_members()
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
