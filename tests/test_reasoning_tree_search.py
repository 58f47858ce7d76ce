"""Search with an exact value: the checker's prefix values, searches driven by a scorer, and bad input."""

import pytest
import torch

from insideout.gpt.model import GPT, GPTConfig
from insideout.reasoning.search import StepExpander, beam_search, checker_values, mcts
from insideout.reasoning.task import parse_problem
from insideout.reasoning.tokenizer import CharTokenizer

TOK = CharTokenizer()


def test_checker_values():
    p = parse_problem("3+4*2")
    prefixes = [[], TOK.encode("3+4=7\n"), TOK.encode("3+4=8\n"), TOK.encode("3+4=8\nwait\n3+4=7\n"),
                TOK.encode("3+4=7\n7*2=4\n<answer>4") + [TOK.eos_id],
                TOK.encode("3+4=7\n7*2=4\n<answer>5") + [TOK.eos_id]]
    assert checker_values([p] * len(prefixes), prefixes) == [1.0, 1.0, 0.0, 1.0, 1.0, 0.0]


@pytest.fixture
def tiny(restore_torch_state):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=TOK.vocab_size, context_length=64, d_model=16, n_layer=1, n_head=2)).eval()


def test_searches_use_the_scorer(tiny):
    problems = [parse_problem("3+4*2"), parse_problem("1*5")]
    calls = []

    def scorer(ps, prefixes):
        calls.append(len(prefixes))
        return checker_values(ps, prefixes)

    res = beam_search(tiny, None, problems, beam_width=2, expand=2, max_depth=3, scorer=scorer,
                      generator=torch.Generator().manual_seed(0))
    assert sum(calls) == res.reward_calls > 0 and res.cpu_seconds > 0
    calls.clear()
    res = mcts(tiny, None, problems, simulations=3, expand=2, scorer=scorer, generator=torch.Generator().manual_seed(0))
    assert sum(calls) == res.reward_calls and len(res.correct) == 2


def test_a_search_needs_a_value_and_a_budget(tiny):
    with pytest.raises(ValueError, match="needs a value"):
        StepExpander(tiny, None)
    problems = [parse_problem("1*5")]
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="search budget"):
            beam_search(tiny, None, problems, beam_width=bad, scorer=checker_values)
        with pytest.raises(ValueError, match="search budget"):
            beam_search(tiny, None, problems, expand=bad, scorer=checker_values)
        with pytest.raises(ValueError, match="search budget"):
            mcts(tiny, None, problems, simulations=bad, scorer=checker_values)
        with pytest.raises(ValueError, match="search budget"):
            mcts(tiny, None, problems, expand=bad, scorer=checker_values)


def test_pipeline_rejects_unknown_searches():
    from insideout.reasoning.pipeline import _search_result

    with pytest.raises(ValueError, match="search kind"):
        _search_result("bfs", {}, "cpu", None, None)
    with pytest.raises(ValueError, match="search value"):
        _search_result("beam", {"value": "gold"}, "cpu", None, None)


def test_noisy_toy_tree():
    from insideout.reasoning.search import noisy_toy_tree, run_uct

    leaves, expand, best = noisy_toy_tree(0, 0.0, depth=3, branching=2)
    assert len(leaves) == 8 and best[""] == max(leaves.values())
    assert [v for _, v, _ in expand("a")] == [best["aa"], best["ab"]]  # exact values at noise 0
    tree = run_uct("", expand, 8, c=0.2)
    assert tree.nodes[tree.best_terminal()].value == max(leaves.values())
    assert noisy_toy_tree(1, 0.5)[1]("") == noisy_toy_tree(1, 0.5)[1]("")  # seeded
    for bad in ({"noise": -1.0}, {"noise": float("nan")}, {"noise": 0.1, "depth": 0}, {"noise": 0.1, "branching": 1}):
        with pytest.raises(ValueError):
            noisy_toy_tree(0, **bad)
