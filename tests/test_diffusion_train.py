"""insideout.diffusion.train and .pipeline: tiny recipes train through fit, are cached and reloaded identically;
checkpoints of another configuration, resolution or latent shape are refused with the reason."""

from __future__ import annotations

import pytest
import torch

from insideout import cache, utils
from insideout.diffusion import train as T
from insideout.diffusion.dit import DiT, DiTConfig
from insideout.diffusion.pipeline import evaluate, generate
from insideout.diffusion.text import TextEncoderConfig
from insideout.diffusion.unet import UNet, UNetConfig
from insideout.diffusion.vae import VAE, VAEConfig


@pytest.fixture(autouse=True)
def tmp_cache(monkeypatch, tmp_path):
    monkeypatch.setenv(utils.CACHE_ENV, str(tmp_path))
    return tmp_path


def tiny(arch: str = "unet", **kw) -> T.Recipe:
    models = {
        "unet": UNetConfig(channels=8, emb_dim=16, groups=4).to_dict(),
        "dit": DiTConfig(d_model=16, n_layer=1, n_head=2, patch=4).to_dict(),
        "vae": VAEConfig(channels=8, groups=4).to_dict(),
        "text-dit": {"dit": DiTConfig(d_model=16, n_layer=1, n_head=2, patch=4, d_context=16).to_dict(),
                     "text": TextEncoderConfig(d_model=16, n_layer=1, n_head=2).to_dict()},
    }
    base = {"name": f"test-{arch}", "arch": arch, "model": models[arch],
            "data": T.DataSpec(n=48, kind="mixed", split="train", seed=9).to_dict(), "batch_size": 16,
            "optim": T._optim(3, 1e-3, warmup=1), "time_sampling": "logit-normal"}
    return T.Recipe.from_dict({**base, **kw})


def test_a_recipe_trains_once_and_reloads_identically(capsys):
    model, meta = T.train(tiny())
    again, meta2 = T.train(tiny())
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("training test-unet") and out[1].startswith("loaded test-unet")
    assert meta["steps"] == 3 and len(meta["history"]["loss"]) == 3 and meta == meta2
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_training_is_deterministic_across_fresh_caches(tmp_path, monkeypatch):
    a, _ = T.train(tiny("dit"), log=None)
    monkeypatch.setenv(utils.CACHE_ENV, str(tmp_path / "other"))
    b, _ = T.train(tiny("dit"), log=None)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_conditional_recipes_train_and_sample():
    for arch, kw in (("unet", {"model": {**UNetConfig(channels=8, emb_dim=16, groups=4, n_classes=12).to_dict()},
                               "p_uncond": 0.2}),
                     ("text-dit", {"p_uncond": 0.2})):
        model, _ = T.train(tiny(arch, **kw), log=None)
        if arch == "unet":
            images = generate(model, 4, steps=2, guidance=2.0, labels=torch.tensor([0, 1, 2, 3]))
        else:
            images = generate(model, 2, steps=2, guidance=3.0, captions=["a red circle above a blue square",
                                                                         "a small red square in the top left"])
        assert images.shape[1:] == (3, 16, 16) and 0 <= images.min() and images.max() <= 1


def test_a_latent_recipe_uses_the_autoencoders_latents():
    vae_recipe = tiny("vae", beta=1e-3)
    vae, info = T.train(vae_recipe, log=None)
    assert info["scale"] > 0 and "mse" in info["history"]
    latent = tiny("dit", model=DiTConfig(image_size=8, in_channels=4, d_model=16, n_layer=1, n_head=2,
                                         patch=2).to_dict(), latent=vae_recipe.to_dict())
    model, _ = T.train(latent, log=None)
    images = generate(model, 3, steps=2, vae=vae, latent_scale=info["scale"])
    assert images.shape == (3, 3, 16, 16)
    wrong = DiT(DiTConfig(image_size=4, in_channels=4, d_model=16, n_layer=1, n_head=2, patch=2))
    with pytest.raises(ValueError, match="latents are"):
        generate(wrong, 2, steps=1, vae=vae)


def test_checkpoint_of_another_resolution_is_refused():
    _, _ = T.train(tiny(), log=None)
    art = cache.load_artifact(cache.artifact_path("test-unet", tiny().to_dict()))
    with pytest.raises(ValueError, match="image_size: checkpoint 16 vs model 32"):
        T.load_into(UNet(UNetConfig(image_size=32, channels=8, emb_dim=16, groups=4)), art)
    art.meta.pop("model_config")  # a bare file: the tensor shapes still give it away
    with pytest.raises(ValueError, match="another resolution"):
        T.load_into(UNet(UNetConfig(channels=16, emb_dim=16, groups=4)), art)
    vae = VAE(VAEConfig(channels=8, groups=4, n_down=2))
    with pytest.raises(ValueError, match="decodes"):
        vae.decode(torch.zeros(1, 4, 8, 8))


def test_evaluate_on_real_images_and_bad_sampler_settings():
    from insideout.diffusion.data import make_shapes
    from insideout.diffusion.metrics import FeatureNet, FeatureNetConfig

    real = make_shapes(40, "single", "test", seed=3)
    net = FeatureNet(FeatureNetConfig(channels=8, features=8))
    out = evaluate(real.images, real.images, net, "single", real.scenes)
    assert out["frechet"] < 1e-6 and out["valid"] == 1.0 and out["acc_all"] == 1.0
    model = UNet(UNetConfig(channels=8, emb_dim=16, groups=4))
    for kwargs, match in (({"steps": 0}, "steps"), ({"solver": "rk45"}, "unknown solver"),
                          ({"guidance": -1.0}, "guidance")):
        with pytest.raises(ValueError, match=match):
            generate(model, 2, **kwargs)
    with pytest.raises(ValueError, match="unknown model"):
        T.recipe("gan")
    with pytest.raises(ValueError, match="p_uncond"):
        tiny(p_uncond=1.5)
