"""mkdocs hooks (``mkdocs.yml``: ``hooks``): the pages that are generated, not written.

- ``guide/cli.md``: the command-line reference, from the parser and the option declarations
  (``docs/gen_cli.py``);
- ``index.md``: the repository's README.md, with its ``docs/...`` links made site-relative, so
  the front page and the site's home page are one text;
- in ``develop/architecture.md``, the ``<!-- contracts -->`` marker becomes the table of the
  import-linter contracts that ``pyproject.toml`` declares.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent


def _gen_cli() -> Any:
    """docs/gen_cli.py as a module (docs/ is not a package)."""
    spec = importlib.util.spec_from_file_location("gen_cli", DOCS / "gen_cli.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def readme_as_index(text: str) -> str:
    """README.md's links into docs/ rewritten for a page that lives in docs/."""
    return text.replace("](docs/", "](")


def contracts_table(pyproject: Path = DOCS.parent / "pyproject.toml") -> str:
    """The ``[[tool.importlinter.contracts]]`` of pyproject.toml as a markdown table."""
    try:
        import tomllib
    except ImportError:  # Python 3.10: pytest's dependency
        import tomli as tomllib

    config = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    rows = ["| contract | kind | modules |", "|---|---|---|"]
    for c in config["tool"]["importlinter"]["contracts"]:
        if c["type"] == "layers":
            what = " > ".join(", ".join(f"`{m.strip()}`" for m in layer.split("|"))
                              for layer in c["layers"]) + " (top to bottom)"
        elif c["type"] == "independence":
            what = " and ".join(f"`{m}`" for m in c["modules"]) + ": neither imports the other"
        else:
            what = (", ".join(f"`{m}`" for m in c.get("source_modules", ())) + " import none of "
                    + ", ".join(f"`{m}`" for m in c.get("forbidden_modules", ())))
        rows.append(f"| {c['name'].replace('|', '/')} | {c['type']} | {what.replace('|', '/')} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if page.file.src_uri == "develop/architecture.md":
        return markdown.replace("<!-- contracts -->", contracts_table())
    return markdown


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    gen = _gen_cli()
    files.append(File.generated(config, gen.PAGE, content=gen.render()))
    readme = (DOCS.parent / "README.md").read_text(encoding="utf-8")
    files.append(File.generated(config, "index.md", content=readme_as_index(readme)))
    return files
