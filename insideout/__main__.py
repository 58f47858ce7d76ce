"""Command line: ``python -m insideout train ...`` and ``python -m insideout generate ...``.

Before a command's module is imported, the Hugging Face libraries are put in offline mode (``HF_HUB_OFFLINE=1``,
``HF_DATASETS_OFFLINE=1``, unless you set them yourself) whenever the command needs no network — every command
except a training run on FineWeb. ``datasets`` otherwise contacts the Hub (a telemetry request) even to read a local
file; it reads these variables once, when it is imported, which is why this happens here.
"""

from __future__ import annotations

import os
import sys

COMMANDS = {
    "train": ("insideout.gpt.train", "train the course GPT (presets, flags, torchrun/DDP)"),
    "generate": ("insideout.gpt.generate", "interactive text generation from a checkpoint"),
}
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def _flag(argv: list[str], name: str) -> str | None:
    """The value of ``--name VALUE`` or ``--name=VALUE`` in argv (the last one wins, as in argparse)."""
    value = None
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def _checkpoint_dataset(path: str) -> str | None:
    """The dataset a checkpoint was trained on (from its metadata), or None if it cannot be read."""
    import json

    try:
        from safetensors import safe_open

        if os.path.isdir(path):
            path = os.path.join(path, "checkpoint.safetensors")
        with safe_open(path, framework="pt") as f:
            return json.loads((f.metadata() or {})["train_config"])["dataset"]
    except Exception:  # a missing or foreign file: the command reports it; no network is needed for that
        return None


def needs_network(command: str, argv: list[str]) -> bool:
    """Whether a command line may need the Hugging Face Hub: only a training run that streams FineWeb does."""
    if command != "train":
        return False
    data = _flag(argv, "--data")
    if data is None and _flag(argv, "--resume") is not None:
        data = _checkpoint_dataset(_flag(argv, "--resume"))
    if data is None:
        try:
            from insideout.gpt.presets import train_config

            data = train_config(_flag(argv, "--preset") or os.environ.get("INSIDEOUT_PRESET", "cpu")).dataset
        except ValueError:  # an unknown preset: the command reports it
            return False
    return data == "fineweb"


def set_offline_mode(command: str, argv: list[str]) -> dict[str, str]:
    """Set the offline variables (where unset) unless the command needs the network; return what was set."""
    if needs_network(command, argv):
        return {}
    changed = {}
    for name in OFFLINE_VARIABLES:
        if name not in os.environ:
            os.environ[name] = changed[name] = "1"
    return changed


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

    set_offline_mode(argv[0], argv[1:])
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
