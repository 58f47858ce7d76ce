"""Chapters 07 and 08: the VAE's shapes and errors, and a latent model refused by an autoencoder (or a checkpoint)
of another latent shape."""

from __future__ import annotations

import pytest
import torch

from insideout import cache, utils
from insideout.diffusion import train as T
from insideout.diffusion.dit import DiTConfig
from insideout.diffusion.pipeline import generate
from insideout.diffusion.text import TextEncoderConfig, TextToImage
from insideout.diffusion.vae import VAE, VAEConfig, vae_loss


@pytest.fixture(autouse=True)
def tmp_cache(monkeypatch, tmp_path):
    monkeypatch.setenv(utils.CACHE_ENV, str(tmp_path))
    return tmp_path


@pytest.mark.parametrize(("n_down", "latent_channels", "side"), [(1, 4, 8), (2, 4, 4), (2, 8, 4)])
def test_vae_shapes(n_down, latent_channels, side):
    torch.manual_seed(0)
    cfg = VAEConfig(channels=8, groups=4, latent_channels=latent_channels, n_down=n_down)
    vae = VAE(cfg)
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    mu, logvar = vae.encode(x)
    assert mu.shape == logvar.shape == (3, latent_channels, side, side) == (3, *cfg.latent_shape)
    recon, _, _ = vae(x)
    assert recon.shape == x.shape and vae.decode(mu).shape == x.shape
    loss, parts = vae_loss(1e-3)(vae, x)
    assert loss.item() == pytest.approx(parts["mse"] + 1e-3 * parts["kl"], rel=1e-5)


def test_vae_bad_configs_and_inputs():
    with pytest.raises(ValueError, match="divisible by 2\\*\\*n_down"):
        VAEConfig(image_size=12, n_down=3)
    with pytest.raises(ValueError, match="VAEConfig.channels=0"):
        VAEConfig(channels=0)
    with pytest.raises(ValueError, match="KL weight must be >= 0"):
        vae_loss(-1.0)
    vae = VAE(VAEConfig(channels=8, groups=4))
    with pytest.raises(ValueError, match=r"takes \(B, 3, 16, 16\)"):
        vae.encode(torch.zeros(2, 1, 16, 16))


def latent_text_recipe(vae_cfg: VAEConfig) -> T.Recipe:
    vae_recipe = T.Recipe(name="test-vae", arch="vae", model=vae_cfg.to_dict(), beta=1e-3,
                          data=T.DataSpec(n=48, kind="mixed", split="train", seed=9).to_dict(), batch_size=16,
                          optim=T._optim(2, 1e-3, warmup=1))
    c, side, _ = vae_cfg.latent_shape
    dit = DiTConfig(image_size=side, in_channels=c, d_model=16, n_layer=1, n_head=2, patch=2, d_context=16)
    return T.Recipe(name="test-latent-text-dit", arch="text-dit",
                    model={"dit": dit.to_dict(), "text": TextEncoderConfig(d_model=16, n_layer=1, n_head=2).to_dict()},
                    data=vae_recipe.data, batch_size=16, optim=T._optim(2, 1e-3, warmup=1), p_uncond=0.2,
                    latent=vae_recipe.to_dict())


def test_a_latent_model_of_another_latent_shape_is_refused():
    recipe = latent_text_recipe(VAEConfig(channels=8, groups=4, latent_channels=4, n_down=1))
    model, _ = T.train(recipe, log=None)
    vae, info = T.train(T.Recipe.from_dict(recipe.latent), log=None)
    images = generate(model, 2, captions=["a red circle in the top left"] * 2, steps=1, guidance=2.0, vae=vae,
                      latent_scale=info["scale"])
    assert images.shape == (2, 3, 16, 16)
    smaller = VAE(VAEConfig(channels=8, groups=4, latent_channels=4, n_down=2))
    with pytest.raises(ValueError, match=r"takes \(4, 8, 8\) but the autoencoder's latents are \(4, 4, 4\)"):
        generate(model, 2, captions=["a red circle in the top left"] * 2, steps=1, vae=smaller)
    art = cache.load_artifact(cache.artifact_path(recipe.name, recipe.to_dict()))
    other = TextToImage(DiTConfig(image_size=4, in_channels=4, d_model=16, n_layer=1, n_head=2, patch=2,
                                  d_context=16), TextEncoderConfig(d_model=16, n_layer=1, n_head=2))
    with pytest.raises(ValueError, match="image_size: checkpoint 8 vs model 4"):
        T.load_into(other, art)
    pixel = TextToImage(DiTConfig(image_size=8, in_channels=3, d_model=16, n_layer=1, n_head=2, patch=2,
                                  d_context=16), TextEncoderConfig(d_model=16, n_layer=1, n_head=2))
    with pytest.raises(ValueError, match="in_channels: checkpoint 4 vs model 3"):
        T.load_into(pixel, art)
