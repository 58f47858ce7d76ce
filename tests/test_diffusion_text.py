"""Chapter 06's text conditioning: words outside the vocabulary become <unk> with a warning naming them, a
text-conditioned checkpoint of another resolution is refused with the reason, and cached prompt samples reload."""

from __future__ import annotations

import pytest
import torch

from insideout import cache, utils
from insideout.diffusion import train as T
from insideout.diffusion.data import CaptionTokenizer, make_shapes
from insideout.diffusion.dit import DiTConfig
from insideout.diffusion.pipeline import generate, prompt_accuracy
from insideout.diffusion.text import TextEncoder, TextEncoderConfig, TextToImage


@pytest.fixture(autouse=True)
def tmp_cache(monkeypatch, tmp_path):
    monkeypatch.setenv(utils.CACHE_ENV, str(tmp_path))
    return tmp_path


def tiny_text_dit(**dit) -> dict:
    return {"dit": DiTConfig(**{"d_model": 16, "n_layer": 1, "n_head": 2, "patch": 4, "d_context": 16, **dit}
                             ).to_dict(),
            "text": TextEncoderConfig(d_model=16, n_layer=1, n_head=2).to_dict()}


def tiny_recipe(**dit) -> T.Recipe:
    return T.Recipe(name="test-text-dit", arch="text-dit", model=tiny_text_dit(**dit),
                    data=T.DataSpec(n=48, kind="mixed", split="train", seed=9).to_dict(), batch_size=16,
                    optim=T._optim(3, 1e-3, warmup=1), p_uncond=0.2)


def test_unknown_words_become_unk_with_a_warning_that_names_them():
    tok = CaptionTokenizer()
    with pytest.warns(UserWarning, match=r"encoded as <unk>: \['orange', 'star'\]"):
        ids = tok.encode("a large orange star in the top left")
    assert ids[0, 2].item() == tok.unk_id and ids[0, 3].item() == tok.unk_id and ids[0, 1].item() > 1
    with pytest.raises(ValueError, match="outside the caption vocabulary"):
        tok.encode("a large orange star in the top left", strict=True)
    # the encoder reads <unk> as an ordinary (learned) word: finite features, the padding still masked
    enc = TextEncoder(TextEncoderConfig(vocab_size=tok.vocab_size, d_model=16, n_layer=1, n_head=2))
    ctx, mask, pooled = enc(ids)
    assert torch.isfinite(ctx).all() and torch.isfinite(pooled).all() and int(mask.sum()) == 8


def test_a_prompt_with_unknown_words_still_samples_and_warns():
    torch.manual_seed(0)
    model = TextToImage(DiTConfig.from_dict(tiny_text_dit()["dit"]), TextEncoderConfig(d_model=16, n_layer=1,
                                                                                        n_head=2))
    with pytest.warns(UserWarning, match="purple"):
        images = generate(model, 2, captions=["a purple circle above a blue square"] * 2, steps=2, guidance=2.0)
    assert images.shape == (2, 3, 16, 16) and 0 <= images.min() and images.max() <= 1
    with pytest.raises(ValueError, match="one caption per image"):
        generate(model, 3, captions=["a red circle in the top left"], steps=1)


def test_a_text_checkpoint_of_another_resolution_is_refused():
    recipe = tiny_recipe()
    T.train(recipe, log=None)
    art = cache.load_artifact(cache.artifact_path(recipe.name, recipe.to_dict()))
    other = TextToImage(DiTConfig.from_dict(tiny_text_dit(image_size=32)["dit"]),
                        TextEncoderConfig(d_model=16, n_layer=1, n_head=2))
    with pytest.raises(ValueError, match="image_size: checkpoint 16 vs model 32"):
        T.load_into(other, art)
    art.meta.pop("model_config")  # a bare checkpoint: the position-free tensors match, the shapes of others do not
    wider = TextToImage(DiTConfig.from_dict(tiny_text_dit(patch=2)["dit"]),
                        TextEncoderConfig(d_model=16, n_layer=1, n_head=2))
    with pytest.raises(ValueError, match="another resolution, patch size or latent shape"):
        T.load_into(wider, art)


def test_prompt_accuracy_reloads_the_same_cached_images():
    recipe = tiny_recipe()
    model, _ = T.train(recipe, log=None)
    data = make_shapes(4, "mixed", "test", seed=3)
    acc, images = prompt_accuracy(model, data.scenes, data.captions, guidance=2.0, steps=2,
                                  cache=(recipe.name, recipe.to_dict()))
    acc2, images2 = prompt_accuracy(model, data.scenes, data.captions, guidance=2.0, steps=2,
                                    cache=(recipe.name, recipe.to_dict()))
    assert torch.equal(images, images2) and acc == acc2 and set(acc) >= {"colour", "shape", "all"}
