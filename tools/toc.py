"""Read `_toc.yml` (Jupyter Book 1.x) into the book order shared by the Makefile's tools."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
TOC = ROOT / "_toc.yml"
# Folders that hold chapters (notebooks); everything else in the toc is front/back matter (markdown).
CHAPTER_DIRS = ("manual_calc", "transformer", "finetuning", "reasoning", "diffusion")


def toc_files(toc: Path = TOC) -> list[str]:
    """Every `file:` of the toc, root first, in book order, without extension (e.g. 'manual_calc/03_attention')."""
    data = yaml.safe_load(toc.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "root" not in data:
        raise ValueError(f"{toc}: not a Jupyter Book toc (no 'root:' key)")
    files = [data["root"]]

    def walk(entries: list) -> None:
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            for key in ("parts", "chapters", "sections"):
                walk(entry.get(key))

    walk(data.get("parts") or data.get("chapters"))
    return [str(Path(f).with_suffix("")) if Path(f).suffix in (".md", ".ipynb") else f for f in files]


def chapter_stems(toc: Path = TOC, root: Path = ROOT) -> list[Path]:
    """The toc entries that are chapters (notebooks), in book order, as paths without extension."""
    return [root / f for f in toc_files(toc) if f.split("/")[0] in CHAPTER_DIRS]


def page_urls(toc: Path = TOC) -> list[str]:
    """The built site's page for every toc entry, relative to `_build/html/`, in book order."""
    return [f + ".html" for f in toc_files(toc)]
