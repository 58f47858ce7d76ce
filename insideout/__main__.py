"""Command line: ``python -m insideout train ...`` and ``python -m insideout generate ...``."""

from __future__ import annotations

import sys

COMMANDS = {
    "train": ("insideout.gpt.train", "train the course GPT (presets, flags, torchrun/DDP)"),
    "generate": ("insideout.gpt.generate", "interactive text generation from a checkpoint"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = [f"  {name:<9} {help_}" for name, (_, help_) in COMMANDS.items()]
        print("usage: python -m insideout {train,generate} [options]\n\ncommands:\n" + "\n".join(lines))
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nunknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0 if argv else 2
    import importlib

    module = importlib.import_module(COMMANDS[argv[0]][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
