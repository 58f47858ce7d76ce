"""Prime tiktoken's cache with GPT-2's ranks so ``tiktoken.get_encoding("gpt2")`` works offline.

tiktoken downloads GPT-2's vocabulary from a URL that is unreachable offline, then caches it in
``$TIKTOKEN_CACHE_DIR`` under the SHA-1 of that URL. The same ranks ship inside the source distribution of the
MIT-licensed PyPI package ``openai-whisper`` (``whisper/assets/gpt2.tiktoken``), which a package registry serves. This
script fetches that sdist with pip (no install, no dependencies), checks the SHA-256 that tiktoken itself expects,
and writes the cache entries tiktoken looks for:

- ``r50k_base``: the ``.tiktoken`` rank file as is;
- ``gpt2``: tiktoken reads GPT-2's original ``vocab.bpe`` (merges) and ``encoder.json`` (token -> id) instead. Both
  are rebuilt from the ranks, byte for byte, and accepted only if their SHA-256 equal the hashes tiktoken expects.

Run ``python -m insideout.gpt.gpt2_ranks`` once (``--from FILE`` uses a local ``gpt2.tiktoken`` instead of pip).
Running it again does nothing when the cache is already complete.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from insideout.gpt.bpe import parse_ranks  # the one parser of the rank format (bpe.read_ranks uses it too)

WHISPER_VERSION = "20250625"  # openai-whisper sdist that ships whisper/assets/gpt2.tiktoken
WHISPER_MEMBER = "whisper/assets/gpt2.tiktoken"

# URLs and SHA-256 hashes exactly as tiktoken_ext/openai_public.py names them (the cache key is sha1(URL)).
R50K_URL = "https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken"
R50K_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
GPT2_VOCAB_BPE_URL = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe"
GPT2_VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
GPT2_ENCODER_JSON_URL = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json"
GPT2_ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
ENDOFTEXT_ID = 50256


@dataclass(frozen=True)
class Targets:
    """The three cache entries tiktoken reads for GPT-2: URL and expected SHA-256 of each file."""

    ranks_url: str = R50K_URL
    ranks_sha256: str = R50K_SHA256
    vocab_bpe_url: str = GPT2_VOCAB_BPE_URL
    vocab_bpe_sha256: str = GPT2_VOCAB_BPE_SHA256
    encoder_json_url: str = GPT2_ENCODER_JSON_URL
    encoder_json_sha256: str = GPT2_ENCODER_JSON_SHA256
    endoftext_id: int = ENDOFTEXT_ID

    def entries(self) -> list[tuple[str, str]]:
        return [(self.ranks_url, self.ranks_sha256), (self.vocab_bpe_url, self.vocab_bpe_sha256),
                (self.encoder_json_url, self.encoder_json_sha256)]


GPT2 = Targets()


def tiktoken_cache_dir() -> Path:
    """The folder tiktoken reads: $TIKTOKEN_CACHE_DIR, else $DATA_GYM_CACHE_DIR, else <tmp>/data-gym-cache."""
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if os.environ.get(var):
            return Path(os.environ[var])
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def cache_path(url: str, cache_dir: Path) -> Path:
    """Where tiktoken caches the file of ``url``: the hex SHA-1 of the URL string."""
    return cache_dir / hashlib.sha1(url.encode()).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_cached(url: str, expected_sha256: str, cache_dir: Path) -> bool:
    path = cache_path(url, cache_dir)
    return path.is_file() and sha256(path.read_bytes()) == expected_sha256


def install(data: bytes, url: str, expected_sha256: str, cache_dir: Path) -> Path:
    """Check ``data`` against the hash tiktoken expects for ``url`` and write it atomically to the cache."""
    actual = sha256(data)
    if actual != expected_sha256:
        raise ValueError(f"SHA-256 mismatch for the file of {url}: got {actual}, tiktoken expects {expected_sha256}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_path(url, cache_dir)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


def data_gym_byte_order() -> list[int]:
    """GPT-2's order of the 256 single bytes: printable non-space characters first, then the rest."""
    order = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    return order + [b for b in range(256) if b not in order]


def _data_gym_alphabet() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte in vocab.bpe/encoder.json (a byte that prints stands for itself)."""
    alphabet, extra = {}, 0
    for b in range(256):
        if chr(b).isprintable() and chr(b) != " ":
            alphabet[b] = chr(b)
        else:
            alphabet[b] = chr(256 + extra)
            extra += 1
    return alphabet


def data_gym_files(ranks: Mapping[bytes, int], special_tokens: Mapping[str, int]) -> tuple[bytes, bytes]:
    """Rebuild GPT-2's ``vocab.bpe`` and ``encoder.json`` from a rank table.

    Each learned token's pair is recovered by running BPE on its bytes with only the tokens ranked before it:
    exactly two parts must remain.
    """
    order = data_gym_byte_order()
    if any(ranks.get(bytes([b])) != i for i, b in enumerate(order)):
        raise ValueError("the single bytes must hold ranks 0..255 in GPT-2's byte order to write data-gym files")
    alphabet = _data_gym_alphabet()

    def text(token: bytes) -> str:
        return "".join(alphabet[b] for b in token)

    lines = ["#version: 0.2"]
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1])[256:]:
        parts = [bytes([b]) for b in token]
        while len(parts) > 2:
            best = min((ranks.get(parts[i] + parts[i + 1], rank), i) for i in range(len(parts) - 1))
            if best[0] >= rank:
                break
            parts[best[1]:best[1] + 2] = [parts[best[1]] + parts[best[1] + 1]]
        if len(parts) != 2:
            raise ValueError(f"token {token!r} (rank {rank}) is not one merge of two earlier tokens")
        lines.append(f"{text(parts[0])} {text(parts[1])}")
    vocab_bpe = ("\n".join(lines) + "\n").encode("utf-8")
    encoder = {text(t): r for t, r in sorted(ranks.items(), key=lambda kv: kv[1])} | dict(special_tokens)
    return vocab_bpe, json.dumps(encoder).encode("utf-8")


def download_whisper_ranks(version: str = WHISPER_VERSION) -> bytes:
    """Fetch openai-whisper with pip (no dependencies, nothing installed) and read its gpt2.tiktoken."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", f"openai-whisper=={version}", "-d", tmp]
        result = subprocess.run(cmd, capture_output=True, text=True)
        archives = sorted(p for p in Path(tmp).iterdir() if p.name.endswith((".tar.gz", ".whl")))
        if result.returncode != 0 or not archives:
            last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ConnectionError(f"`pip {' '.join(cmd[3:])}` failed: {last[0]}")
        archive = archives[0]
        if archive.name.endswith(".whl"):  # a wheel is a zip archive
            with zipfile.ZipFile(archive) as wheel:
                for name in wheel.namelist():
                    if name == WHISPER_MEMBER:
                        return wheel.read(name)
        else:  # the sdist: openai_whisper-<version>/whisper/assets/gpt2.tiktoken; only that member is read
            with tarfile.open(archive, "r:gz") as tar:
                for member in tar.getmembers():
                    if member.isfile() and member.name.endswith("/" + WHISPER_MEMBER):
                        return tar.extractfile(member).read()
    raise FileNotFoundError(f"openai-whisper=={version} has no {WHISPER_MEMBER}: pin a version that ships it")


def prime(cache_dir: Path | None = None, source: Path | None = None, verbose: bool = True,
          targets: Targets = GPT2) -> Path:
    """Make ``get_encoding("r50k_base")`` and ``get_encoding("gpt2")`` work offline; return the cache folder.

    ``targets`` names the URLs and hashes (GPT-2's by default; tests pass their own for a tiny rank file).
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else tiktoken_cache_dir()
    say = print if verbose else (lambda *a, **k: None)
    if all(is_cached(url, digest, cache_dir) for url, digest in targets.entries()):
        say(f"GPT-2 ranks already primed in {cache_dir}")
        return cache_dir
    if source is not None:
        data = Path(source).read_bytes()
        say(f"using the local rank file {source}")
    elif is_cached(targets.ranks_url, targets.ranks_sha256, cache_dir):
        data = cache_path(targets.ranks_url, cache_dir).read_bytes()
    else:
        say(f"fetching openai-whisper=={WHISPER_VERSION} (sdist, {WHISPER_MEMBER}) from the package index")
        try:
            data = download_whisper_ranks()
        except (ConnectionError, OSError) as exc:
            raise RuntimeError(
                f"cannot get GPT-2's ranks: {exc}. Either allow pip to reach PyPI, or pass a local copy of "
                f"gpt2.tiktoken (sha256 {targets.ranks_sha256}) with `python -m insideout.gpt.gpt2_ranks --from FILE`"
            ) from exc
    if sha256(data) != targets.ranks_sha256:  # check before writing anything
        raise ValueError(f"the rank file has SHA-256 {sha256(data)}, but tiktoken expects {targets.ranks_sha256}: "
                         "it is not GPT-2's gpt2.tiktoken / r50k_base.tiktoken")
    vocab_bpe, encoder_json = data_gym_files(parse_ranks(data), {"<|endoftext|>": targets.endoftext_id})
    for blob, (url, digest) in zip((data, vocab_bpe, encoder_json), targets.entries(), strict=True):
        install(blob, url, digest, cache_dir)
    say(f"primed tiktoken's cache in {cache_dir}: r50k_base.tiktoken, vocab.bpe, encoder.json (hashes checked)")
    return cache_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m insideout.gpt.gpt2_ranks", description=__doc__.split("\n")[0])
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="folder to prime (default: $TIKTOKEN_CACHE_DIR, else tiktoken's default)")
    parser.add_argument("--from", dest="source", type=Path, default=None,
                        help="a local gpt2.tiktoken / r50k_base.tiktoken instead of downloading")
    args = parser.parse_args(argv)
    try:
        cache_dir = prime(args.cache_dir, args.source)
    except (RuntimeError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.cache_dir is not None and Path(args.cache_dir) != tiktoken_cache_dir():
        print(f"note: set TIKTOKEN_CACHE_DIR={cache_dir} so tiktoken finds these files")
    else:
        import tiktoken

        ids = tiktoken.get_encoding("gpt2").encode("Hello world")
        print(f"check: tiktoken.get_encoding('gpt2').encode('Hello world') = {ids}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
