"""UCT on toy trees with known values, beam search / MCTS plumbing on a tiny model, budgets and bad input."""

from __future__ import annotations

import random

import pytest
import torch

from insideout.gpt.model import GPT, GPTConfig
from insideout.reasoning.reward import RewardGPT
from insideout.reasoning.search import UCTTree, beam_search, mcts, run_uct
from insideout.reasoning.task import parse_problem
from insideout.reasoning.tokenizer import CharTokenizer


def deceptive_tree():
    """Depth 2: branch 'a' looks best (0.6) but all its leaves are 0.6; branch 'b' (0.4) hides the optimum 1.0."""
    values = {"": 0.5, "a": 0.6, "b": 0.4, "c": 0.3,
              "aa": 0.6, "ab": 0.6, "ba": 0.1, "bb": 1.0, "ca": 0.2, "cb": 0.3}

    def expand(state):
        if len(state) == 2:
            return []
        return [(state + x, values[state + x], len(state) == 1) for x in "abc" if state + x in values]

    return values, expand


def test_uct_finds_the_hidden_optimum():
    values, expand = deceptive_tree()
    tree = run_uct("", expand, simulations=12, c=1.0, root_value=values[""])
    best = tree.nodes[tree.best_terminal()]
    assert best.state == "bb" and best.value == 1.0
    # greedy descent by the evaluator's value would have chosen branch 'a' and ended at 0.6
    greedy = max("abc", key=lambda x: values[x])
    assert max(values[greedy + y] for y in "ab") == 0.6


def random_tree(seed: int, depth: int = 4, branching: int = 3):
    """Leaves with random values; every inner node valued at the best leaf below it plus noise."""
    rng = random.Random(seed)
    leaves = {"".join(p): rng.random() for p in __import__("itertools").product("abc"[:branching], repeat=depth)}

    def best_below(prefix):
        return max(v for k, v in leaves.items() if k.startswith(prefix))

    def expand(state):
        if len(state) == depth:
            return []
        out = []
        for x in "abc"[:branching]:
            s = state + x
            v = leaves[s] if len(s) == depth else min(1.0, best_below(s) + rng.uniform(-0.15, 0.15))
            out.append((s, v, len(s) == depth))
        return out

    return leaves, expand


@pytest.mark.parametrize("seed", range(5))
def test_uct_finds_the_optimum_of_random_trees(seed):
    leaves, expand = random_tree(seed)
    tree = run_uct("", expand, simulations=40, c=0.5)  # 40 expansions for 81 leaves and 40 inner nodes
    best = tree.nodes[tree.best_terminal()]
    assert best.value == max(leaves.values()), (best.state, best.value, max(leaves.values()))


def test_uct_statistics():
    values, expand = deceptive_tree()
    tree = run_uct("", expand, simulations=12)
    root = tree.nodes[0]
    assert root.visits == 1 + 12 and sum(tree.nodes[c].visits for c in root.children) >= 12
    assert tree.nodes[tree.most_visited_path()].state in values


def test_budget_errors():
    _, expand = deceptive_tree()
    with pytest.raises(ValueError, match="search budget"):
        run_uct("", expand, simulations=0)
    with pytest.raises(ValueError):
        UCTTree("", c=-1.0)


@pytest.fixture
def tiny(restore_torch_state):
    torch.manual_seed(0)
    tok = CharTokenizer()
    policy = GPT(GPTConfig(vocab_size=tok.vocab_size, context_length=64, d_model=16, n_layer=1, n_head=2)).eval()
    prm = RewardGPT(GPT(policy.config)).eval()
    return policy, prm


def test_beam_search_and_mcts_run_and_count(tiny):
    policy, prm = tiny
    problems = [parse_problem("3+4*2"), parse_problem("1*5")]
    g = torch.Generator().manual_seed(0)
    res = beam_search(policy, prm, problems, beam_width=2, expand=2, max_depth=3, generator=g)
    assert len(res.texts) == 2 and res.policy_calls > 0 and res.reward_calls > 0 and res.tokens > 0
    assert len(res.correct) == 2
    res = mcts(policy, prm, problems, simulations=3, expand=2, generator=g)
    assert len(res.texts) == 2 and res.policy_calls >= 2 * 2 and res.tokens > 0
    with pytest.raises(ValueError, match="search budget"):
        beam_search(policy, prm, problems, beam_width=0)
    with pytest.raises(ValueError, match="search budget"):
        mcts(policy, prm, problems, simulations=0)
