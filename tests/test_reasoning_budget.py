"""Budget forcing: bad budgets, bad kinds, and the chapter's cached runs refusing unknown controls."""

import pytest

from insideout.reasoning.budget import cap_hook, thinking_tokens, wait_hook


@pytest.mark.parametrize("bad", [-1, 1.5, True, "8"])
def test_bad_budgets(bad):
    with pytest.raises(ValueError, match="integer >= 0"):
        cap_hook(bad)
    with pytest.raises(ValueError, match="integer >= 0"):
        wait_hook(bad)


def test_bad_kind():
    from insideout.reasoning.pipeline import budget_run

    with pytest.raises(ValueError, match="choose 'cap' or 'wait'"):
        budget_run("stretch", 4, "cpu")


def test_thinking_tokens():
    assert thinking_tokens("3+4=7\n<answer>7") == 6
    assert thinking_tokens("3+4=7\n") == 6  # no answer: all of it is thinking
    assert thinking_tokens("<answer>7") == 0
