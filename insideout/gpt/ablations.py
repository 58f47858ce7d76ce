"""Breaking the GPT on purpose: named ablations, one small training budget for all, and what to watch meanwhile.

Chapter 11 trains the same small GPT once per *variant* (one switch of ``GPTConfig`` changed) and seed, through
the course's one training loop (``insideout.training.fit``), on the same data with the same budget, and records:

* the training loss of every step and the validation loss every ``eval_every`` steps;
* every ``stats_every`` steps, the gradient norm of each block's parameters (before clipping), read from the
  training step itself by hooks that fire when a parameter's gradient is complete;
* at the same steps, activation statistics of each block on a fixed probe batch: the root mean square of the
  residual stream after the block, of the attention and MLP outputs, the mean entropy of the attention rows (each
  row divided by its sum first) and the mean row sum of the attention weights (1 for a softmax).

Each run is cached (``insideout.cache.cached``) under a key of everything it depends on, so a chapter re-runs from
the cache when it is there and trains otherwise; missing runs can train in several worker processes at once (each
on one thread, so a run gives the same numbers wherever it trains). ``word_bigram_rate`` measures word order in
generated text against the corpus.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch

from insideout.gpt.model import GPT, GPTConfig
from insideout.utils import DictConfig

# name -> (what it changes, the GPTConfig fields it sets)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "baseline": ("the course's block: pre-LN, GELU, its positions, several heads, scaled init", {}),
    "no_layer_norm": ("every LayerNorm replaced by the identity", {"layer_norm": False}),
    "post_ln": ("LayerNorm after each residual add, as in the original transformer", {"norm_position": "post"}),
    "no_residual": ("no skip connections: x -> attn(ln1(x)) -> mlp(ln2(.))", {"residual": False}),
    "learned_positions": ("a learned position table added to the token embeddings (GPT-2's positions)",
                          {"position": "learned"}),
    "no_positions": ("no position information at all: no position table, no rotation", {"position": "none"}),
    "no_attention_scale": ("scores q.k without the 1/sqrt(d_head) factor", {"scale_attention": False}),
    "no_softmax_normalisation": ("attention weights not normalised to sum to 1", {"attn_normalize": False}),
    "relu": ("ReLU instead of GELU in the MLP", {"activation": "relu"}),
    "sigmoid": ("sigmoid instead of GELU in the MLP", {"activation": "sigmoid"}),
    "one_head": ("one attention head of width d_model instead of several", {"n_head": 1}),
    "no_residual_init_scaling": ("residual projections initialised like every other matrix (no 1/sqrt(2L))",
                                 {"scale_residual_init": False}),
}

# pairs of variants that cannot be combined, and why
_INCOMPATIBLE = {
    frozenset({"post_ln", "no_layer_norm"}): "post-LN moves the LayerNorms and no_layer_norm removes them, so "
                                             "there is nothing left to move",
}


def available_variants() -> list[str]:
    """The variants this version of ``GPTConfig`` supports (a variant needs every field it sets)."""
    fields = {f.name for f in dataclasses.fields(GPTConfig)}
    return [name for name, (_, changes) in VARIANTS.items() if set(changes) <= fields]


def variant_config(base: GPTConfig, *names: str) -> GPTConfig:
    """``base`` with the switches of the named variants applied (several names combine); validated.

    Unknown names, variants whose switch this ``GPTConfig`` lacks, conflicting and impossible combinations raise a
    ``ValueError`` that names the choices.
    """
    if not isinstance(base, GPTConfig):
        raise ValueError(f"base must be a GPTConfig, got {type(base).__name__}")
    if not names:
        raise ValueError(f"name at least one variant: choose from {', '.join(VARIANTS)}")
    fields = {f.name for f in dataclasses.fields(GPTConfig)}
    changes: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for name in names:
        if name not in VARIANTS:
            raise ValueError(f"unknown ablation variant {name!r}: choose from {', '.join(VARIANTS)}")
        _, sets = VARIANTS[name]
        missing = sorted(set(sets) - fields)
        if missing:
            raise ValueError(f"variant {name!r} needs GPTConfig.{', GPTConfig.'.join(missing)}, which this version of "
                             f"insideout.gpt.model does not have; available variants: "
                             f"{', '.join(available_variants())}")
        for key, value in sets.items():
            if key in changes and changes[key] != value:
                raise ValueError(f"variants {origin[key]!r} and {name!r} both set GPTConfig.{key} "
                                 f"({changes[key]!r} vs {value!r}): combine variants that change different switches")
            changes[key], origin[key] = value, name
    chosen = set(names)
    for pair, why in _INCOMPATIBLE.items():
        if pair <= chosen:
            a, b = sorted(pair)
            raise ValueError(f"variants {a!r} and {b!r} cannot be combined: {why}")
    if "n_head" in changes and base.d_model % changes["n_head"]:
        raise ValueError(f"variant {origin['n_head']!r} needs d_model={base.d_model} divisible by "
                         f"n_head={changes['n_head']}")
    if "position" in changes and changes["position"] == base.position:
        raise ValueError(f"variant {origin['position']!r} changes nothing: the base config already has "
                         f"position={base.position!r}")
    return GPTConfig.from_dict({**base.to_dict(), **changes})


# ---- the budget every variant gets ---------------------------------------------------------------------------


@dataclass
class AblationConfig(DictConfig):
    """The small GPT, its data and the one training budget that every variant gets. Validated on construction."""

    vocab_size: int = 1024  # the course's BPE cut to its first vocab_size ids (chapter 01: a prefix of its merges)
    context_length: int = 64
    d_model: int = 64
    n_layer: int = 4
    n_head: int = 4
    position: str = "rope"  # the baseline's positions (the course model's: RoPE, chapter 07)
    batch_size: int = 16
    steps: int = 300
    lr: float = 3e-3
    warmup_steps: int = 30
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 25
    eval_windows: int = 128  # validation: the first eval_windows non-overlapping windows of the validation plays
    stats_every: int = 10  # per-block gradient norms and activation statistics every this many steps
    probe_windows: int = 4  # windows of the probe batch for activation statistics

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_length", "d_model", "n_layer", "n_head", "batch_size", "steps",
                     "eval_every", "eval_windows", "stats_every", "probe_windows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"AblationConfig.{name}={value!r}: must be a positive integer")
        if not 257 < self.vocab_size <= 4096:
            raise ValueError(f"AblationConfig.vocab_size={self.vocab_size}: must lie in (257, 4096], a prefix of the "
                             f"course vocabulary")
        if not 0 <= self.warmup_steps < self.steps:
            raise ValueError(f"AblationConfig.warmup_steps={self.warmup_steps}: must lie in [0, steps={self.steps})")
        if self.d_model % self.n_head:
            raise ValueError(f"AblationConfig.d_model={self.d_model} is not divisible by n_head={self.n_head}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"AblationConfig.lr={self.lr!r}: must be a finite number > 0")
        if self.position not in ("learned", "rope", "alibi"):
            raise ValueError(f"AblationConfig.position={self.position!r}: choose 'learned', 'rope' or 'alibi' (the "
                             f"variant 'no_positions' removes them)")

    def gpt_config(self) -> GPTConfig:
        """The baseline GPTConfig of the budget."""
        return GPTConfig(vocab_size=self.vocab_size, context_length=self.context_length, d_model=self.d_model,
                         n_layer=self.n_layer, n_head=self.n_head, position=self.position,
                         dropout=0.0)

    def optim_config(self):
        from insideout.training import OptimConfig

        return OptimConfig(max_steps=self.steps, lr=self.lr, min_lr_ratio=self.min_lr_ratio,
                           warmup_steps=self.warmup_steps, weight_decay=self.weight_decay, grad_clip=self.grad_clip)


@lru_cache(maxsize=4)
def ablation_tokenizer(vocab_size: int):
    """The course's BPE cut to its first ``vocab_size`` ids (end-of-text last), as a course Tokenizer."""
    from insideout.gpt.tokenizer import Tokenizer, course_bpe

    bpe = course_bpe()
    if vocab_size > bpe.vocab_size:
        raise ValueError(f"vocab_size={vocab_size} exceeds the course vocabulary's {bpe.vocab_size} ids")
    small = bpe if vocab_size == bpe.vocab_size else bpe.truncated(vocab_size)
    return Tokenizer(small.to_tiktoken(f"course-bpe-{vocab_size}"), name=f"course-bpe-{vocab_size}")


@lru_cache(maxsize=4)
def ablation_data(vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(training ids, validation ids): every work of each split encoded and followed by end-of-text, concatenated."""
    from insideout.gpt.corpus import shakespeare_works

    tokenizer = ablation_tokenizer(vocab_size)
    out = []
    for split in ("train", "validation"):
        docs = tokenizer.encode_batch([w.text for w in shakespeare_works(split)])
        out.append(torch.tensor([i for doc in docs for i in (*doc, tokenizer.eot_id)], dtype=torch.long))
    return out[0], out[1]


def unigram_loss(vocab_size: int) -> float:
    """Validation loss (nats/token) of the unigram model: training-token frequencies, add-one smoothed.

    A reference point between the uniform guess (ln V) and a model that uses its context: a run that ends near it
    has learned which tokens are common and little else.
    """
    train, val = ablation_data(vocab_size)
    counts = torch.bincount(train, minlength=vocab_size).double() + 1.0
    log_p = counts.log() - counts.sum().log()
    return float(-log_p[val].mean())


def validation_windows(config: AblationConfig) -> torch.Tensor:
    """The first ``eval_windows`` non-overlapping windows of T + 1 tokens of the validation plays: (n, T + 1)."""
    _, val = ablation_data(config.vocab_size)
    T = config.context_length
    n = min(config.eval_windows, (len(val) - 1) // T)
    return torch.stack([val[i * T: i * T + T + 1] for i in range(n)])


def training_batches(config: AblationConfig, seed: int) -> Iterator[torch.Tensor]:
    """Endless batches of random windows of T + 1 training tokens, (batch, T + 1), in an order fixed by ``seed``."""
    train, _ = ablation_data(config.vocab_size)
    T, generator = config.context_length, torch.Generator().manual_seed(10_000 + seed)
    offsets = torch.arange(T + 1)
    while True:
        starts = torch.randint(0, len(train) - T - 1, (config.batch_size,), generator=generator)
        yield train[starts[:, None] + offsets]  # (batch, T + 1)


@torch.no_grad()
def validation_loss(model: GPT, windows: torch.Tensor, batch: int = 64) -> float:
    """Mean next-token loss (nats/token) over the windows."""
    total, count = 0.0, 0
    for rows in windows.split(batch):
        _, loss = model(rows[:, :-1], rows[:, 1:])
        total += loss.double().item() * rows[:, 1:].numel()
        count += rows[:, 1:].numel()
    return total / count


# ---- what is recorded during training -------------------------------------------------------------------------


class _Monitor:
    """Per-block gradient norms from the training step (hooks) and activation statistics on a probe batch."""

    def __init__(self, model: GPT, probe: torch.Tensor):
        self.model, self.probe, self.active = model, probe, False
        L = model.config.n_layer
        self._sq = [0.0] * L
        self.grad: list[list[float]] = []  # per stats step: gradient norm of each block
        self.acts: dict[str, list[list[float]]] = {"resid_rms": [], "attn_rms": [], "mlp_rms": [], "attn_entropy": [],
                                                 "attn_mass": []}
        self._handles = []
        for i, block in enumerate(model.blocks):
            for p in block.parameters():
                self._handles.append(p.register_post_accumulate_grad_hook(self._grad_hook(i)))

    def _grad_hook(self, layer: int):
        def hook(p: torch.Tensor) -> None:
            if self.active:
                self._sq[layer] += float(p.grad.detach().double().pow(2).sum())
        return hook

    def finish_step(self) -> None:
        """After a recorded step: store the gradient norms, then measure activations on the probe."""
        self.grad.append([math.sqrt(s) for s in self._sq])
        self._sq = [0.0] * len(self._sq)
        self.active = False
        self._activations()

    @torch.no_grad()
    def _activations(self) -> None:
        model = self.model
        seen: dict[str, list[float]] = {k: [] for k in self.acts}

        def rms(name: str):
            return lambda _m, _i, out: seen[name].append(float(out.double().pow(2).mean().sqrt()))

        def entropy(_m, _i, pattern):
            p = pattern.double()
            if not bool(torch.isfinite(p).all()):
                seen["attn_entropy"].append(float("nan"))
                seen["attn_mass"].append(float("inf"))
                return
            mass = p.sum(-1, keepdim=True)  # 1 for every row of a softmax
            seen["attn_mass"].append(float(mass.mean()))
            mass = mass.clamp_min(1e-300)
            q = p / mass  # a probability row even when the variant does not normalise
            seen["attn_entropy"].append(float(-(q * q.clamp_min(1e-300).log()).sum(-1).mean()))

        handles = []
        for block in model.blocks:
            handles.append(block.hook_resid_post.register_forward_hook(rms("resid_rms")))
            handles.append(block.hook_attn_out.register_forward_hook(rms("attn_rms")))
            if block.mlp is not None:
                handles.append(block.hook_mlp_out.register_forward_hook(rms("mlp_rms")))
            handles.append(block.attn.hook_pattern.register_forward_hook(entropy))
        was_training = model.training
        model.eval()
        try:
            model(self.probe)
        finally:
            model.train(was_training)
            for h in handles:
                h.remove()
        for key, values in seen.items():
            self.acts[key].append(values)

    def close(self) -> None:
        for h in self._handles:
            h.remove()


@dataclass
class AblationRun:
    """One variant trained with one seed: its curves, its monitoring and (if it stayed finite) its weights."""

    variant: str
    seed: int
    config: AblationConfig
    model_config: GPTConfig
    history: dict[str, list] = field(default_factory=dict)  # step, loss, grad_norm, eval_step, val_loss, stats_step
    layer_grad_norm: list[list[float]] = field(default_factory=list)  # (stats steps, n_layer)
    activations: dict[str, list[list[float]]] = field(default_factory=dict)  # name -> (stats steps, n_layer)
    diverged_at: int | None = None
    cpu_seconds: float = 0.0
    state: dict[str, torch.Tensor] | None = None
    trained_now: bool = False

    @property
    def final_val_loss(self) -> float:
        """The last validation loss, or inf when the run diverged."""
        if self.diverged_at is not None or not self.history.get("val_loss"):
            return float("inf")
        return self.history["val_loss"][-1]

    def model(self) -> GPT:
        """The trained model (ValueError for a diverged run, whose weights are not finite)."""
        if self.state is None:
            raise ValueError(f"variant {self.variant!r} seed {self.seed} diverged at step {self.diverged_at}: "
                             f"no finite weights were kept")
        model = GPT(self.model_config)
        model.load_state_dict_strict(self.state)
        return model.eval()

    def steps_to_reach(self, loss: float, window: int = 10) -> int | None:
        """The first step at which the training loss, averaged over the last ``window`` steps, is <= ``loss``."""
        values = self.history["loss"]
        for i in range(len(values)):
            chunk = values[max(0, i - window + 1): i + 1]
            if len(chunk) == window and sum(chunk) / window <= loss:
                return self.history["step"][i]
        return None


def _train(variant: str, config: AblationConfig, seed: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Train one run from scratch on one thread (restored afterwards): (weights, everything measured)."""
    from insideout.training import fit

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model_config = variant_config(config.gpt_config(), variant)
        torch.manual_seed(seed)
        model = GPT(model_config)
        windows = validation_windows(config)
        probe = windows[: config.probe_windows, :-1]
        monitor = _Monitor(model, probe)
        stream = training_batches(config, seed)
        stats_steps: list[int] = []

        def batches() -> Iterator[torch.Tensor]:
            step = 0
            while True:
                step += 1
                monitor.active = step % config.stats_every == 0 or step == 1
                yield next(stream)

        def on_step(step: int, history: dict) -> None:
            if monitor.active:
                stats_steps.append(step)
                monitor.finish_step()

        def loss_fn(m: GPT, rows: torch.Tensor) -> torch.Tensor:
            return m(rows[:, :-1], rows[:, 1:])[1]

        def eval_fn(m: GPT) -> dict[str, float]:
            value = validation_loss(m, windows)
            return {"val_loss": value if math.isfinite(value) else float("nan")}

        cpu0 = time.process_time()
        result = fit(model, batches(), loss_fn, config.optim_config(), eval_fn=eval_fn, eval_every=config.eval_every,
                     on_step=on_step, on_nonfinite="stop")
        cpu = time.process_time() - cpu0
        monitor.close()
    finally:
        torch.set_num_threads(threads)
    history = {k: result.history.get(k, []) for k in ("step", "loss", "grad_norm", "eval_step", "val_loss")}
    history["stats_step"] = stats_steps[: len(monitor.grad)]
    diverged = result.history.get("diverged_at", [None])[0]
    finite = diverged is None and all(bool(torch.isfinite(p).all()) for p in model.parameters())
    tensors = {k: v.detach().clone() for k, v in model.state_dict().items()} if finite else {}
    if model_config.tie_weights:
        tensors.pop("lm_head.weight", None)
    meta = {"history": history, "layer_grad_norm": monitor.grad, "activations": monitor.acts,
            "diverged_at": diverged, "cpu_seconds": cpu}
    return tensors, meta


def cache_key(variant: str, config: AblationConfig, seed: int) -> dict[str, Any]:
    """Everything a run depends on: the variant's full GPTConfig, the budget and the seed."""
    model_config = variant_config(config.gpt_config(), variant)
    return {"variant": variant, "model": model_config.to_dict(), "budget": config.to_dict(), "seed": seed,
            "recorder": 1}


def run_variant(variant: str, config: AblationConfig, seed: int = 0, *, log=None) -> AblationRun:
    """One run, from the cache when it is there, trained (and cached) otherwise."""
    from insideout.cache import cached

    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed={seed!r}: must be an integer >= 0")
    key = cache_key(variant, config, seed)
    artifact = cached("ablation", key, lambda: _train(variant, config, seed), log=log)
    meta = artifact.meta
    return AblationRun(variant=variant, seed=seed, config=config,
                       model_config=variant_config(config.gpt_config(), variant), history=meta["history"],
                       layer_grad_norm=meta["layer_grad_norm"], activations=meta["activations"],
                       diverged_at=meta["diverged_at"], cpu_seconds=meta["cpu_seconds"],
                       state=artifact.tensors or None, trained_now=artifact.trained_now)


def _run_in_worker(args: tuple[str, dict, int]) -> float:
    variant, config, seed = args
    return run_variant(variant, AblationConfig.from_dict(config), seed).cpu_seconds


def run_ablations(variants: Iterable[str], config: AblationConfig, seeds: Iterable[int] = (0, 1, 2), *,
                  workers: int = 1) -> dict[tuple[str, int], AblationRun]:
    """Every (variant, seed) run; the missing ones are trained first, in ``workers`` processes when > 1."""
    from insideout.cache import artifact_path

    variants, seeds = list(variants), list(seeds)
    if not variants or not seeds:
        raise ValueError("run_ablations needs at least one variant and one seed")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r}: must be an integer >= 1")
    for v in variants:
        variant_config(config.gpt_config(), v)  # unknown or unsupported variants fail before anything trains
    jobs = [(v, s) for v in variants for s in seeds]
    missing = [(v, s) for v, s in jobs if not artifact_path("ablation", cache_key(v, config, s)).is_file()]
    if missing and workers > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        ablation_data(config.vocab_size)  # fail early here, not in a worker
        with ProcessPoolExecutor(max_workers=min(workers, len(missing)), mp_context=mp.get_context("spawn")) as pool:
            list(pool.map(_run_in_worker, [(v, config.to_dict(), s) for v, s in missing]))
    runs = {(v, s): run_variant(v, config, s) for v, s in jobs}
    for job in missing:  # trained by this call, in a worker or just now
        runs[job].trained_now = True
    return runs


# ---- comparing variants -----------------------------------------------------------------------------------------


def final_losses(runs: dict[tuple[str, int], AblationRun], variant: str) -> list[float]:
    """The final validation loss of each seed of a variant (inf for a diverged seed), in seed order."""
    chosen = sorted((seed, run) for (v, seed), run in runs.items() if v == variant)
    if not chosen:
        raise ValueError(f"no runs of variant {variant!r}: ran {sorted({v for v, _ in runs})}")
    return [run.final_val_loss for _, run in chosen]


def compare(a: list[float], b: list[float]) -> int:
    """-1 if every value of ``a`` is below every value of ``b``, +1 if every one is above, 0 if the ranges overlap.

    With three seeds each, a separation this complete happens by chance with probability 1/20 when the two lists
    come from the same distribution (one of the C(6, 3) = 20 equally likely orderings puts a's values first).
    """
    if not a or not b:
        raise ValueError("compare needs at least one value on each side")
    if max(a) < min(b):
        return -1
    if min(a) > max(b):
        return 1
    return 0


def moving_average(values: list[float], window: int) -> list[float]:
    """Trailing mean over the last ``window`` values (fewer at the start)."""
    if window < 1:
        raise ValueError(f"window={window}: must be >= 1")
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


@torch.no_grad()
def sample_texts(run: AblationRun, n: int = 16, new_tokens: int = 48, *, seed: int = 0,
                 temperature: float = 1.0) -> list[str]:
    """``n`` continuations of the end-of-text token by the run's model, decoded (seeded, so reproducible).

    Sampled with ``insideout.gpt.sampling.sample`` on one thread (restored afterwards).
    """
    from insideout.gpt.sampling import sample

    tokenizer = ablation_tokenizer(run.config.vocab_size)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is faster, and gives the same draws on every machine
    try:
        result = sample(run.model(), [[tokenizer.eot_id]] * n, new_tokens, temperature=temperature,
                        stop_tokens=(tokenizer.eot_id,), generator=torch.Generator().manual_seed(seed))
    finally:
        torch.set_num_threads(threads)
    texts = []
    for row in result.tokens:
        end = row.index(tokenizer.eot_id) if tokenizer.eot_id in row else len(row)
        texts.append(tokenizer.decode(row[:end]))  # a document ends at its end-of-text token
    return texts


# ---- word order --------------------------------------------------------------------------------------------------

_WORD = re.compile(r"[a-z']+")


def words(text: str) -> list[str]:
    """Lower-case words (letters and apostrophes) of a text."""
    return _WORD.findall(text.lower())


def word_bigrams(texts: Iterable[str]) -> Counter:
    """Counts of adjacent word pairs within each text."""
    counts: Counter = Counter()
    for text in texts:
        w = words(text)
        counts.update(zip(w, w[1:], strict=False))
    return counts


def word_bigram_rate(texts: Iterable[str], reference: Counter | set) -> float:
    """Share of the adjacent word pairs of ``texts`` that occur in the reference corpus (NaN if there are none)."""
    pairs = [pair for text in texts for pair in zip(words(text), words(text)[1:], strict=False)]
    if not pairs:
        return float("nan")
    return sum(pair in reference for pair in pairs) / len(pairs)


def shuffle_words(text: str, generator: torch.Generator) -> str:
    """The words of a text in a random order: the same vocabulary, no word order (a word-salad floor)."""
    w = words(text)
    order = torch.randperm(len(w), generator=generator).tolist()
    return " ".join(w[i] for i in order)
