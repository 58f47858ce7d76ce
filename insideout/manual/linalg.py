"""Matrices as lists of rows of Python floats: the few operations the hand calculation needs.

A matrix is ``list[list[float]]`` (row-major, ``M[i][j]`` is row ``i``, column ``j``); a vector is
``list[float]``. Everything is written out with loops so that each number can be traced by eye.
"""

from __future__ import annotations

import math

Vector = list[float]
Matrix = list[list[float]]


def shape(a: Matrix | Vector) -> tuple[int, ...]:
    """(rows, cols) of a matrix or (n,) of a vector."""
    if a and isinstance(a[0], list):
        return (len(a), len(a[0]))
    return (len(a),)


def zeros(rows: int, cols: int) -> Matrix:
    """A rows x cols matrix of 0.0."""
    return [[0.0] * cols for _ in range(rows)]


def transpose(a: Matrix) -> Matrix:
    """A^T: (n, m) -> (m, n)."""
    return [list(col) for col in zip(*a, strict=True)]


def matmul(a: Matrix, b: Matrix) -> Matrix:
    """A B for A (n, k) and B (k, m) -> (n, m)."""
    if len(a[0]) != len(b):
        raise ValueError(f"matmul: inner sizes differ, A is {shape(a)} and B is {shape(b)}")
    bt = transpose(b)
    return [[sum(x * y for x, y in zip(row, col, strict=True)) for col in bt] for row in a]


def matmul_t(a: Matrix, b: Matrix) -> Matrix:
    """A B^T for A (n, k) and B (m, k) -> (n, m); the form a linear layer with weight (out, in) needs."""
    if len(a[0]) != len(b[0]):
        raise ValueError(f"matmul_t: row lengths differ, A is {shape(a)} and B is {shape(b)}")
    return [[sum(x * y for x, y in zip(row, brow, strict=True)) for brow in b] for row in a]


def linear(x: Matrix, w: Matrix, b: Vector | None = None) -> Matrix:
    """x W^T + b, as torch.nn.Linear: x (T, in), W (out, in), b (out,) -> (T, out)."""
    y = matmul_t(x, w)
    if b is not None:
        y = [[v + bj for v, bj in zip(row, b, strict=True)] for row in y]
    return y


def add(a: Matrix, b: Matrix) -> Matrix:
    """Element-wise A + B of two matrices of the same shape."""
    if shape(a) != shape(b):
        raise ValueError(f"add: shapes differ, {shape(a)} and {shape(b)}")
    return [[x + y for x, y in zip(ra, rb, strict=True)] for ra, rb in zip(a, b, strict=True)]


def hadamard(a: Matrix, b: Matrix) -> Matrix:
    """Element-wise product A * B."""
    return [[x * y for x, y in zip(ra, rb, strict=True)] for ra, rb in zip(a, b, strict=True)]


def scale(a: Matrix, c: float) -> Matrix:
    """c A."""
    return [[c * x for x in row] for row in a]


def col_sums(a: Matrix) -> Vector:
    """Sum over rows: (T, n) -> (n,); the gradient of a bias broadcast over T rows."""
    return [sum(col) for col in zip(*a, strict=True)]


def columns(a: Matrix, start: int, stop: int) -> Matrix:
    """The column slice A[:, start:stop]."""
    return [row[start:stop] for row in a]


def hstack(blocks: list[Matrix]) -> Matrix:
    """Concatenate matrices with the same number of rows side by side."""
    return [[x for block in blocks for x in block[i]] for i in range(len(blocks[0]))]


def copy(a):
    """A deep copy of a nested list of floats."""
    return [copy(x) for x in a] if isinstance(a, list) else a


def flatten(a) -> Vector:
    """All numbers of a nested list, row-major."""
    if isinstance(a, list):
        return [x for item in a for x in flatten(item)]
    return [a]


def norm(a) -> float:
    """Euclidean (Frobenius) norm of a nested list."""
    return math.sqrt(sum(x * x for x in flatten(a)))


def max_abs_diff(a, b) -> float:
    """max |a - b| over two nested lists of the same shape (inf entries must match exactly)."""
    fa, fb = flatten(a), flatten(b)
    if len(fa) != len(fb):
        raise ValueError(f"max_abs_diff: {len(fa)} numbers against {len(fb)}")
    worst = 0.0
    for x, y in zip(fa, fb, strict=True):
        if x == y:  # also covers equal infinities
            continue
        d = abs(x - y)
        if math.isnan(d):
            return math.inf  # a NaN on either side is never "close"
        worst = max(worst, d)
    return worst


def numel(a) -> int:
    """How many numbers a nested list holds."""
    return len(flatten(a))
