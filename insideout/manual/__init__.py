"""Part 1 of the course: a tiny GPT computed by hand in pure Python (lists of floats, ``math`` and ``random``).

The model is exactly the course's PyTorch GPT (``insideout.gpt.model``) at the size ``TINY_CONFIG``, with
parameters keyed by the same state-dict names, so every number here can be checked against PyTorch.
"""

from .backward import (
    attention_head_backward,
    backward,
    cross_entropy_backward,
    embedding_backward,
    gelu_backward,
    gelu_derivative,
    layer_norm_backward,
    linear_backward,
    loss_and_gradients,
    softmax_backward,
    softmax_jacobian,
)
from .gradcheck import (
    FD_STEP,
    LogicalTensor,
    central_difference,
    get_entry,
    largest_entry,
    logical_tensors,
    relative_error,
)
from .linalg import (
    add,
    col_sums,
    columns,
    copy,
    flatten,
    hadamard,
    hstack,
    linear,
    matmul,
    matmul_t,
    max_abs_diff,
    norm,
    numel,
    scale,
    shape,
    transpose,
    zeros,
)
from .model import (
    GPT2_STD,
    IGNORE_INDEX,
    INIT_SCHEMES,
    LN_EPS,
    SEED,
    TARGETS,
    TARGETS_WITH_IGNORE,
    TEXT,
    TINY_CONFIG,
    TOKENS,
    VOCAB,
    attention_head,
    causal_scores,
    check_config,
    config_from_parameters,
    cross_entropy,
    embed,
    forward,
    gelu,
    gelu_exact,
    init_std,
    initial_parameters,
    layer_norm,
    layer_norm_stats,
    log_softmax,
    logits_and_loss,
    loss_only,
    num_parameters,
    parameter_shapes,
    softmax,
    softmax_rows,
    split_heads,
    tokenize,
)
from .noise import within
from .optim import ADAMW, adamw_step, decays, init_state

__all__ = [
    "GPT2_STD", "INIT_SCHEMES", "ADAMW", "FD_STEP", "LogicalTensor", "logical_tensors", "within",
    "IGNORE_INDEX", "LN_EPS", "SEED", "TARGETS",
    "TARGETS_WITH_IGNORE", "TEXT", "TINY_CONFIG",
    "TOKENS", "VOCAB", "adamw_step", "add", "attention_head", "attention_head_backward", "backward",
    "causal_scores", "central_difference", "check_config", "col_sums", "columns", "config_from_parameters", "copy",
    "cross_entropy", "cross_entropy_backward", "decays", "embed", "embedding_backward", "flatten", "forward",
    "gelu", "gelu_backward", "gelu_derivative", "gelu_exact", "get_entry", "hadamard", "hstack", "init_state",
    "init_std", "initial_parameters", "largest_entry", "layer_norm", "layer_norm_backward", "layer_norm_stats",
    "linear", "linear_backward", "log_softmax", "logits_and_loss", "loss_and_gradients", "loss_only", "matmul",
    "matmul_t", "max_abs_diff", "norm", "num_parameters", "numel", "parameter_shapes", "relative_error", "scale",
    "shape", "softmax", "softmax_backward", "softmax_jacobian", "softmax_rows", "split_heads", "tokenize",
    "transpose", "zeros",
]
