"""insideout.diffusion.data and .judge: generated scenes, captions, the tokenizer, and the judge on real and hand-made
images."""

from __future__ import annotations

import math

import pytest
import torch

from insideout.diffusion import data as D
from insideout.diffusion import judge as J


def test_scenes_are_deterministic_and_images_in_range():
    a, b = D.make_shapes(64, "mixed", "train", seed=11), D.sample_scenes(64, "mixed", "train", seed=11)
    assert torch.equal(a.images, D.render(b))
    assert a.images.shape == (64, 3, 16, 16) and 0 <= a.images.min() and a.images.max() <= 1
    assert set(a.scenes.n_objects.tolist()) == {1, 2}
    pairs = a.scenes.n_objects == 2
    assert (a.scenes.colour[pairs, 0] != a.scenes.colour[pairs, 1]).all()  # a pair has two colours


def test_held_out_combinations_never_in_train_and_always_in_held_out():
    train = D.sample_scenes(2000, "mixed", "train", seed=1)
    held = D.sample_scenes(300, "mixed", "held_out", seed=2)
    assert not train.has_held_out.any() and held.has_held_out.all()
    assert D.sample_scenes(3000, "single", "all", seed=3).has_held_out.float().mean() > 0.15


def test_captions_follow_the_grammar_and_parse_back():
    d = D.make_shapes(200, "mixed", "test", seed=4)
    for i, text in enumerate(d.captions):
        parsed = D.parse_caption(text)
        k = int(d.scenes.n_objects[i])
        assert int(parsed.n_objects[0]) == k
        # the parsed scene names the same objects; for pairs possibly in the order the caption gives
        want = {(int(d.scenes.colour[i, s]), int(d.scenes.shape[i, s])) for s in range(k)}
        got = {(int(parsed.colour[0, s]), int(parsed.shape[0, s])) for s in range(k)}
        assert want == got, text
        if k == 1:
            assert int(parsed.quadrant[0]) == int(d.scenes.quadrant[i]) and parsed.size[0, 0] == d.scenes.size[i, 0]
        else:
            assert int(parsed.relation[0]) == int(d.scenes.relation[i])
            assert int(parsed.colour[0, 0]) == int(d.scenes.colour[i, 0])  # object 0 is left/above in both
    with pytest.raises(ValueError, match="grammar"):
        D.parse_caption("a red circle next to a blue square")


def test_tokenizer_round_trip_and_unknown_words():
    tok = D.CaptionTokenizer()
    ids = tok.encode(["a small red circle in the top left", "a blue square above a green triangle"])
    assert ids.shape == (2, D.MAX_WORDS) and tok.decode(ids)[0] == "a small red circle in the top left"
    with pytest.warns(UserWarning, match=r"<unk>: \['purple'\]"):
        unk = tok.encode("a small purple circle in the top left")
    assert unk[0, 2].item() == tok.unk_id
    with pytest.raises(ValueError, match="outside the caption vocabulary"):
        tok.encode("a small purple circle in the top left", strict=True)
    with pytest.raises(ValueError, match="at most"):
        tok.encode(" ".join(["a"] * 13))
    with pytest.raises(ValueError, match="empty"):
        tok.encode("   ")


@pytest.mark.parametrize("bad,match", [
    (torch.rand(3, 16, 16), "batch dimension"),
    (torch.rand(2, 1, 16, 16), r"\(N, 3, H, W\)"),
    (torch.rand(2, 3, 16, 16) * 2 - 1, r"expected \[0, 1\]"),
    ((torch.rand(2, 3, 16, 16) * 255).to(torch.uint8), "dtype"),
    (torch.full((1, 3, 16, 16), math.nan), "NaN"),
])
def test_bad_images_are_refused_with_the_reason(bad, match):
    with pytest.raises(ValueError, match=match):
        J.find_objects(bad)


def test_wrong_resolution_is_refused():
    with pytest.raises(ValueError, match="expected 16x16"):
        D.check_images(torch.rand(2, 3, 32, 32), resolution=16)


def test_judge_reads_real_images_perfectly():
    for kind in ("single", "pair"):
        d = D.make_shapes(150, kind, "test", seed=5)
        acc = J.accuracy(J.score(d.images, d.scenes))
        assert all(v == 1.0 for v in acc.values()), (kind, acc)
        assert J.validity(J.find_objects(d.images), kind).all()


def hand_made() -> tuple[torch.Tensor, list[tuple]]:
    """Objects painted pixel by pixel, without the renderer: (images, [(colour, shape, size, quadrant)])."""
    img = torch.zeros(4, 3, 16, 16)
    red, green, blue, yellow = (D.COLOURS[i] for i in range(4))
    img[0, :, 2:9, 1:8] = red[:, None, None]  # a 7x7 square, top left: large
    yy, xx = torch.meshgrid(torch.arange(16) + 0.5, torch.arange(16) + 0.5, indexing="ij")
    disc = (xx - 12.5) ** 2 + (yy - 12.5) ** 2 <= 2.6**2  # 21 pixels (5x5 without corners), bottom right: small
    img[1][:, disc] = blue[:, None]
    for row in range(5):  # a triangle, apex up: rows 1, 1, 3, 3, 5 pixels wide (13 pixels), top right: small
        half = row // 2
        img[2, :, 2 + row, 12 - half:12 + half + 1] = green[:, None]
    img[3, :, 9:14, 2:7] = yellow[:, None, None]  # a 5x5 square, bottom left: small
    truth = [(0, 1, 1, 0), (2, 0, 0, 3), (1, 2, 0, 1), (3, 1, 0, 2)]
    return img, truth


def test_judge_on_hand_made_images():
    img, truth = hand_made()
    objects = J.find_objects(img)
    for objs, (colour, shape, size, quadrant) in zip(objects, truth, strict=True):
        assert len(objs) == 1
        o = objs[0]
        q = 2 * int(o.cy >= 8) + int(o.cx >= 8)
        assert (o.colour, o.shape, o.size, q) == (colour, shape, size, quadrant), o
    assert J.find_objects(torch.zeros(1, 3, 16, 16)) == [[]]  # a black image shows nothing


def test_score_catches_each_wrong_attribute():
    d = D.make_shapes(40, "single", "test", seed=6)
    wrong = D.Scenes.cat([d.scenes[i] for i in range(40)])
    wrong.colour[:10, 0] = (wrong.colour[:10, 0] + 1) % 4
    wrong.shape[10:20, 0] = (wrong.shape[10:20, 0] + 1) % 3
    wrong.size[20:30, 0] = 1 - wrong.size[20:30, 0]
    wrong.cx[30:40, 0] = 16 - wrong.cx[30:40, 0]  # the mirrored quadrant
    s = J.score(d.images, wrong)
    assert not s["colour"][:10].any() and not s["shape"][10:20].any()
    assert not s["size"][20:30].any() and not s["position"][30:40].any()
    assert s["colour"][10:].all() and not s["all"].any()


def test_toys_and_bad_arguments():
    for name in D.TOYS:
        x = D.sample_toy(name, 500, seed=1)
        assert x.shape == (500, 2) and torch.isfinite(x).all() and 0.3 < x.std() < 3
    with pytest.raises(ValueError, match="unknown toy"):
        D.sample_toy("swiss", 10)
    with pytest.raises(ValueError, match="kind"):
        D.sample_scenes(10, "triple")
    with pytest.raises(ValueError, match="split"):
        D.sample_scenes(10, "single", "valid")
