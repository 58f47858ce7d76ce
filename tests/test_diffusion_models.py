"""Part 5's networks: adaLN-Zero is the identity at initialisation, shapes, padding, checkpoints of another
resolution or latent shape, and the text encoder's handling of captions."""

from __future__ import annotations

import pytest
import torch

from insideout.diffusion.data import CaptionTokenizer
from insideout.diffusion.dit import DiT, DiTBlock, DiTConfig, sincos_2d
from insideout.diffusion.text import TextEncoder, TextEncoderConfig, TextToImage
from insideout.diffusion.unet import UNet, UNetConfig
from insideout.diffusion.vae import VAE, VAEConfig, kl_per_number


def tiny_dit(**kw) -> DiTConfig:
    return DiTConfig(**{"image_size": 8, "patch": 2, "d_model": 32, "n_layer": 2, "n_head": 2, **kw})


def test_adaln_zero_block_is_exactly_the_identity_at_init():
    torch.manual_seed(0)
    x, c = torch.randn(3, 16, 32), torch.randn(3, 32)
    block = DiTBlock(tiny_dit())
    assert torch.equal(block(x, c), x)
    ctx, mask = torch.randn(3, 5, 24), torch.ones(3, 5, dtype=torch.bool)
    cross = DiTBlock(tiny_dit(d_context=24))
    assert torch.equal(cross(x, c, ctx, mask), x)
    plain = DiTBlock(tiny_dit(adaln="adaLN"))  # without the zero gate the block changes x from the start
    assert (plain(x, c) - x).abs().max() > 0.1


def test_dit_shapes_and_zero_output_at_init():
    torch.manual_seed(0)
    model = DiT(tiny_dit(n_classes=3))
    x, t = torch.randn(4, 3, 8, 8), torch.rand(4)
    out = model(x, t, y=torch.tensor([0, 1, 2, 3]))  # 3 is the null class
    assert out.shape == x.shape and torch.equal(out, torch.zeros_like(out))
    assert sincos_2d(4, 32).shape == (16, 32)
    # the patch round trip: unpatchify inverts a token layout made from the image
    p, g = 2, 4
    tokens = x.view(4, 3, g, p, g, p).permute(0, 2, 4, 3, 5, 1).reshape(4, g * g, p * p * 3)
    assert torch.equal(model.unpatchify(tokens), x)


def test_unet_shapes_and_bad_inputs():
    model = UNet(UNetConfig(image_size=8, channels=8, emb_dim=16, groups=4))
    x = torch.randn(2, 3, 8, 8)
    assert model(x, torch.rand(2)).shape == x.shape
    with pytest.raises(ValueError, match=r"\(B, 3, 8, 8\)"):
        model(torch.randn(2, 3, 16, 16), torch.rand(2))
    with pytest.raises(ValueError, match="one time per image"):
        model(x, torch.rand(3))
    with pytest.raises(ValueError, match="without classes"):
        model(x, torch.rand(2), y=torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="divisible by 4"):
        UNetConfig(image_size=10)
    with pytest.raises(ValueError, match="patch"):
        DiTConfig(image_size=16, patch=3)
    with pytest.raises(ValueError, match="adaln"):
        DiTConfig(adaln="film")


def test_text_encoder_ignores_padding_and_null_caption():
    torch.manual_seed(0)
    tok = CaptionTokenizer()
    enc = TextEncoder(TextEncoderConfig(vocab_size=tok.vocab_size, d_model=16, n_head=2))
    ids = tok.encode(["a red circle above a blue square"])
    ctx, mask, pooled = enc(ids)
    short = ids[:, :8]  # the same caption with fewer padding positions
    ctx2, _, pooled2 = enc(short)
    assert torch.allclose(pooled, pooled2, atol=1e-6) and torch.allclose(ctx[:, :7], ctx2[:, :7], atol=1e-6)
    model = TextToImage(tiny_dit(d_context=16), enc.config)
    drop = model.encode(tok.encode(["a red circle above a blue square"] * 2), drop=torch.tensor([True, False]))
    null = model.encode_null(1)
    assert torch.equal(drop["pooled"][0], null["pooled"][0]) and drop["context_mask"][0].sum() == 1
    with pytest.raises(ValueError, match="all padding"):
        enc(torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="d_context"):
        TextToImage(tiny_dit(d_context=8), enc.config)


def test_vae_shapes_kl_and_latent_shape_errors():
    torch.manual_seed(0)
    vae = VAE(VAEConfig(channels=8, latent_channels=4, n_down=2, groups=4))
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    recon, mu, logvar = vae(x)
    assert recon.shape == x.shape and mu.shape == (2, 4, 4, 4) and vae.config.latent_shape == (4, 4, 4)
    assert kl_per_number(torch.zeros(3), torch.zeros(3)).item() == 0.0
    with pytest.raises(ValueError, match=r"decodes \(B, 4, 4, 4\)"):
        vae.decode(torch.randn(2, 4, 8, 8))
    with pytest.raises(ValueError, match="takes"):
        vae.encode(torch.randn(2, 3, 32, 32))
