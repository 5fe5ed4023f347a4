"""Tests of gpt2.py: the model against Hugging Face's independent GPT-2, the parameter count, weight
tying through every path a tensor takes (state dicts, checkpoints, torch.compile, the optimizer),
initialisation, sampling, optimizer groups, input validation, FLOP/MFU accounting and the CLI.

Everything runs on the CPU with tiny configurations; the 124M-and-up models are only built on the
meta device, to count their parameters.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import gpt2
from conftest import save_checkpoint
from gpt2 import GPT, GPTConfig

V = gpt2.GPT2_VOCAB_SIZE  # 50257


def tiny_config(**overrides) -> GPTConfig:
    fields = dict(block_size=16, vocab_size=97, n_layer=2, n_head=2, n_embd=32)
    fields.update(overrides)
    return GPTConfig(**fields)


def make_model(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(tiny_config(**overrides))


def assert_tied(model: GPT) -> None:
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()


# ----------------------------------------------------------------------------------------------
# An independent implementation: a random tiny transformers.GPT2LMHeadModel saved to disk


HF_SHAPE = dict(n_positions=32, n_embd=32, n_layer=2, n_head=4)


def _random_hf_model(vocab_size: int, seed: int = 0, **config_overrides):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    hf_config = GPT2Config(vocab_size=vocab_size, **{**HF_SHAPE, **config_overrides})
    hf = GPT2LMHeadModel(hf_config).eval()
    # HF initialises biases to 0 and LayerNorms to (1, 0): randomise everything so that every
    # bias, LayerNorm and (square, so shape cannot catch it) Conv1D transpose is exercised.
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:  # matrices, biases, LayerNorm biases
                p.copy_(0.05 * torch.randn_like(p))
    return hf


@pytest.fixture(scope="module")
def hf_pair(tmp_path_factory):
    """(HF model, directory it was save_pretrained to) with the real GPT-2 vocabulary."""
    hf = _random_hf_model(V)
    d = tmp_path_factory.mktemp("hf_gpt2")
    hf.save_pretrained(d)
    assert (d / "model.safetensors").is_file() and (d / "config.json").is_file()
    return hf, d


def _hf_tokens(
    n_positions: int = HF_SHAPE["n_positions"], vocab_size: int = V, batch: int = 3, seed: int = 1
):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (batch, n_positions), generator=g)


def _assert_matches_hf(model: GPT, hf) -> None:
    x = _hf_tokens()
    model.eval()
    with torch.no_grad():
        ours, _ = model(x)
        theirs = hf(x).logits
        assert ours.shape == theirs.shape == (3, HF_SHAPE["n_positions"], hf.config.vocab_size)
        assert theirs.abs().max() > 0.1  # the comparison is not between two near-zero tensors
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
        # HF shifts the labels inside; ours takes inputs and targets already shifted.
        _, our_loss = model(x[:, :-1], x[:, 1:])
        their_loss = hf(x, labels=x).loss
        torch.testing.assert_close(our_loss, their_loss, atol=1e-5, rtol=0)


def test_logits_and_loss_match_huggingface_safetensors(hf_pair):
    hf, d = hf_pair
    model = GPT.from_pretrained(d)
    assert model.config == GPTConfig(block_size=32, vocab_size=V, n_layer=2, n_head=4, n_embd=32)
    assert_tied(model)
    _assert_matches_hf(model, hf)


def explicit_attention(q, k, v, is_causal):
    """softmax(q k^T / sqrt(head_size), causally masked) v, written out as the video first does."""
    T = q.size(-2)
    att = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))
    return (
        att.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf")).softmax(dim=-1)
        @ v
    )


def test_explicit_attention_matches_huggingface(hf_pair, monkeypatch):
    hf, d = hf_pair
    model = GPT.from_pretrained(d).eval()
    x = _hf_tokens()
    with torch.no_grad():
        theirs = hf(x).logits
        # transformers uses it too
        monkeypatch.setattr(gpt2.F, "scaled_dot_product_attention", explicit_attention)
        torch.testing.assert_close(model(x)[0], theirs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("stored", ["both", "wte-only", "lm_head-only"])
def test_pytorch_model_bin_loads(hf_pair, tmp_path, stored):
    hf, _ = hf_pair
    # transformers 5 always writes safetensors (safe_serialization=False is ignored), so write
    # the .bin layout by hand, as older transformers versions did. Tied files may hold the shared
    # matrix under either name.
    hf.config.save_pretrained(tmp_path)
    state = dict(hf.state_dict())
    if stored == "wte-only":
        del state["lm_head.weight"]
    elif stored == "lm_head-only":
        del state["transformer.wte.weight"]
    torch.save(state, tmp_path / "pytorch_model.bin")
    assert not (tmp_path / "model.safetensors").exists()
    model = GPT.from_pretrained(tmp_path)
    assert_tied(model)
    _assert_matches_hf(model, hf)


def test_openai_style_state_dict_without_prefix_loads(hf_pair, tmp_path):
    """OpenAI's original hub files: a GPT2Model state dict (no "transformer." prefix, no lm_head)
    that still holds the attention-mask buffers attn.bias / attn.masked_bias."""
    hf, _ = hf_pair
    hf.config.save_pretrained(tmp_path)
    state = dict(hf.transformer.state_dict())
    n = hf.config.n_positions
    for i in range(hf.config.n_layer):
        state[f"h.{i}.attn.bias"] = torch.tril(torch.ones(n, n, dtype=torch.uint8)).view(1, 1, n, n)
        state[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    assert not any(k.startswith(("transformer.", "lm_head.")) for k in state)
    torch.save(state, tmp_path / "pytorch_model.bin")
    model = GPT.from_pretrained(tmp_path)
    assert_tied(model)
    _assert_matches_hf(model, hf)


def test_small_vocab_huggingface_model_matches(tmp_path):
    hf = _random_hf_model(vocab_size=123, seed=3)
    hf.save_pretrained(tmp_path)
    model = GPT.from_pretrained(tmp_path)
    assert model.config.vocab_size == 123
    x = torch.randint(0, 123, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x)[0], hf(x).logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_huggingface_checkpoint_with_other_activation_is_refused(tmp_path, activation):
    hf = _random_hf_model(vocab_size=64, activation_function=activation)
    hf.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=f"activation.*{activation}|{activation}.*activation"):
        GPT.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(scale_attn_by_inverse_layer_idx=True),
        dict(scale_attn_weights=False),
        dict(tie_word_embeddings=False),
        dict(n_inner=64),
    ],
    ids=lambda o: next(iter(o)),
)
def test_huggingface_checkpoint_this_model_cannot_reproduce_is_refused(tmp_path, overrides):
    """Config options that change GPT-2's math (or untie lm_head from wte) must not load silently
    into a model that computes something else."""
    hf = _random_hf_model(vocab_size=64, **overrides)
    hf.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=next(iter(overrides))):
        GPT.from_pretrained(tmp_path)


def test_from_pretrained_bad_sources(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing: no such file, directory, or hub name"):
        GPT.from_pretrained(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="config.json"):
        GPT.from_pretrained(tmp_path)  # a directory, but not a Hugging Face one


def test_parameter_names_match_huggingface():
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = tiny_config()
    with torch.device("meta"):
        hf = GPT2LMHeadModel(
            GPT2Config(
                vocab_size=cfg.vocab_size,
                n_positions=cfg.block_size,
                n_embd=cfg.n_embd,
                n_layer=cfg.n_layer,
                n_head=cfg.n_head,
            )
        )
        ours = GPT(cfg)
    hf_keys = {k for k in hf.state_dict() if not k.endswith((".attn.bias", ".attn.masked_bias"))}
    assert set(ours.state_dict()) == hf_keys
    assert "transformer.h.1.mlp.c_proj.weight" in hf_keys and "lm_head.weight" in hf_keys


# ----------------------------------------------------------------------------------------------
# Configuration and parameter counts


def _expected_count(cfg: GPTConfig) -> int:
    C, L = cfg.n_embd, cfg.n_layer
    per_block = (
        2 * C + (3 * C * C + 3 * C) + (C * C + C) + 2 * C + (4 * C * C + 4 * C) + (4 * C * C + C)
    )
    return cfg.vocab_size * C + cfg.block_size * C + L * per_block + 2 * C  # lm_head is wte


@pytest.mark.parametrize(
    "name, expected",
    [
        ("gpt2", 124_439_808),
        ("gpt2-medium", 354_823_168),
        ("gpt2-large", 774_030_080),
        ("gpt2-xl", 1_557_611_200),
    ],
)
def test_gpt2_preset_parameter_counts(name, expected):
    cfg = gpt2.MODEL_PRESETS[name]
    assert cfg.vocab_size == 50257 and cfg.block_size == 1024
    with torch.device("meta"):
        model = GPT(cfg)
    assert_tied(model)
    assert model.num_parameters() == expected
    assert sum(p.numel() for p in model.parameters()) == expected
    # state_dict() lists the tied tensor under both names; counted once it is the same number
    sd = model.state_dict()
    assert sum(t.numel() for t in sd.values()) == expected + cfg.vocab_size * cfg.n_embd
    assert model.num_parameters(exclude_position_embedding=True) == expected - 1024 * cfg.n_embd


def test_default_config_is_gpt2_124m():
    cfg = GPTConfig()
    assert (cfg.block_size, cfg.vocab_size, cfg.n_layer, cfg.n_head, cfg.n_embd) == (
        1024,
        50257,
        12,
        12,
        768,
    )
    assert gpt2.MODEL_PRESETS["gpt2"] == cfg
    m, large, xl = (gpt2.MODEL_PRESETS[k] for k in ("gpt2-medium", "gpt2-large", "gpt2-xl"))
    assert (m.n_layer, m.n_head, m.n_embd) == (24, 16, 1024)
    assert (large.n_layer, large.n_head, large.n_embd) == (36, 20, 1280)
    assert (xl.n_layer, xl.n_head, xl.n_embd) == (48, 25, 1600)


@pytest.mark.parametrize("name", ["small", "tiny"])
def test_cpu_presets_count_and_size(name):
    cfg = gpt2.MODEL_PRESETS[name]
    with torch.device("meta"):
        model = GPT(cfg)
    assert model.num_parameters() == _expected_count(cfg)
    assert model.num_parameters() < 124_439_808 / 3


def test_preset_config_and_config_validation():
    cfg = gpt2.preset_config("gpt2", vocab_size=50304)
    assert cfg.vocab_size == 50304 and cfg.n_layer == 12
    assert gpt2.MODEL_PRESETS["gpt2"].vocab_size == 50257  # the preset itself is untouched
    with pytest.raises(ValueError, match="unknown model preset"):
        gpt2.preset_config("gpt3")
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=100, n_head=3)
    with pytest.raises(ValueError, match="n_layer"):
        GPTConfig(n_layer=0)


# ----------------------------------------------------------------------------------------------
# Weight tying


def test_tie_survives_state_dict_round_trip():
    model = make_model(0)
    sd = model.state_dict()
    assert sd["lm_head.weight"].data_ptr() == sd["transformer.wte.weight"].data_ptr()
    other = make_model(1)
    assert not torch.equal(other.lm_head.weight, model.lm_head.weight)
    other.load_state_dict(sd)
    assert_tied(other)
    torch.testing.assert_close(
        other.transformer.wte.weight, model.transformer.wte.weight, atol=0, rtol=0
    )
    x = torch.randint(0, 97, (2, 16))
    assert torch.equal(other(x)[0], model(x)[0])
    assert len(list(model.parameters())) == len(sd) - 1  # one tensor, two names


def test_tied_gradient_is_sum_of_both_uses():
    tied = make_model(0)
    untied = copy.deepcopy(tied)
    untied.lm_head.weight = nn.Parameter(tied.lm_head.weight.detach().clone())
    assert untied.lm_head.weight is not untied.transformer.wte.weight
    x = torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(0))
    loss_t = tied(x, x)[1]
    loss_u = untied(x, x)[1]
    torch.testing.assert_close(loss_t, loss_u)
    loss_t.backward(), loss_u.backward()
    expected = untied.transformer.wte.weight.grad + untied.lm_head.weight.grad
    torch.testing.assert_close(tied.lm_head.weight.grad, expected, atol=1e-7, rtol=1e-5)


def test_one_optimizer_step_updates_tied_tensor_once():
    model = make_model(0)
    lr, wd, eps = 1e-2, 0.1, 1e-8
    opt = model.configure_optimizers(wd, lr, eps=eps, verbose=False)
    n_in_groups = sum(len(g["params"]) for g in opt.param_groups)
    unique = {id(p) for p in model.parameters()}
    assert (
        n_in_groups == len(unique) == len(list(model.named_parameters(remove_duplicate=False))) - 1
    )
    in_groups = [id(p) for g in opt.param_groups for p in g["params"]]
    assert len(in_groups) == len(set(in_groups))  # no tensor appears twice

    x = torch.randint(0, 97, (2, 16))
    model(x, x)[1].backward()
    w0 = model.lm_head.weight.detach().clone()
    g = model.lm_head.weight.grad.clone()
    opt.step()
    # AdamW's first step: bias-corrected m/sqrt(v) = g/|g|; decoupled decay w*(1 - lr*wd). Applied
    # twice the tensor would move about twice as far.
    expected = w0 * (1 - lr * wd) - lr * g / (g.abs() + eps)
    torch.testing.assert_close(model.lm_head.weight.detach(), expected, atol=1e-6, rtol=1e-5)
    assert torch.equal(model.lm_head.weight, model.transformer.wte.weight)


def test_tie_survives_torch_compile():
    eager = make_model(0, n_layer=1)
    model = copy.deepcopy(eager)
    assert_tied(model)
    compiled = torch.compile(model)
    opt = model.configure_optimizers(0.1, 1e-2, verbose=False)
    x = torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(0))
    before = model.lm_head.weight.detach().clone()

    logits, loss = compiled(x, x)
    loss.backward()
    logits_e, loss_e = eager(x, x)
    loss_e.backward()
    torch.testing.assert_close(logits, logits_e, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss, loss_e, atol=1e-6, rtol=1e-6)
    for (n, p), (_, q) in zip(model.named_parameters(), eager.named_parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=1e-4, msg=n)

    opt.step()
    assert_tied(model)
    assert compiled.lm_head.weight is compiled.transformer.wte.weight
    assert not torch.equal(model.lm_head.weight, before)  # the step changed it ...
    assert torch.equal(model.lm_head.weight, model.transformer.wte.weight)  # ... under both names
    assert set(compiled.state_dict()) == {"_orig_mod." + k for k in eager.state_dict()}
    # the compiled graph reads the updated (single) tensor: same logits as an eager copy of it
    eager.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(compiled(x)[0], eager(x)[0], atol=1e-5, rtol=1e-5)
    # the length check survives compilation
    with pytest.raises(AssertionError, match="block_size is 16"):
        compiled(torch.zeros(1, 17, dtype=torch.long))


# ----------------------------------------------------------------------------------------------
# Initialisation


def test_init_statistics():
    n_layer = 4
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=64, vocab_size=512, n_layer=n_layer, n_head=4, n_embd=256))
    resid_std = 0.02 * (2 * n_layer) ** -0.5
    seen = set()
    for name, p in model.named_parameters():
        seen.add(name)
        if name.endswith(("attn.c_proj.weight", "mlp.c_proj.weight")):
            assert p.std().item() == pytest.approx(resid_std, rel=0.05), name
            assert abs(p.mean().item()) < 0.1 * resid_std, name
        elif name.endswith(("c_attn.weight", "c_fc.weight")) or name in (
            "transformer.wte.weight",
            "transformer.wpe.weight",
        ):
            assert p.std().item() == pytest.approx(0.02, rel=0.05), name
            assert abs(p.mean().item()) < 0.002, name
        elif ".ln_" in name or name.startswith("transformer.ln_f"):
            fill = 1.0 if name.endswith("weight") else 0.0
            assert torch.all(p == fill), name
        elif name.endswith("bias"):
            assert torch.all(p == 0), name
        else:
            pytest.fail(f"unexpected parameter {name}")
    assert model.lm_head.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert sum(n.endswith("c_proj.weight") for n in seen) == 2 * n_layer


# ----------------------------------------------------------------------------------------------
# Forward pass


def test_forward_shapes_loss_and_ignore_index():
    model = make_model(0)
    x = torch.randint(0, 97, (3, 10))
    logits, loss = model(x)
    assert logits.shape == (3, 10, 97) and loss is None
    y = torch.randint(0, 97, (3, 10))
    y[0, :4] = -1
    y[2, 7] = -1
    _, loss = model(x, y)
    keep = y != -1
    expected = F.cross_entropy(logits[keep], y[keep])
    torch.testing.assert_close(loss, expected)
    # a fresh model predicts roughly uniformly
    assert loss.item() == pytest.approx(math.log(97), rel=0.1)


def test_forward_at_some_positions_gives_their_logits_alone():
    model = make_model(0).eval()
    x = torch.randint(0, 97, (3, 10))
    positions = torch.tensor([0, 9, 10, 17, 29])  # flat indices into the 3 x 10 positions
    with torch.no_grad():
        logits, loss = model(x, positions=positions)
        every = model(x)[0]
    assert logits.shape == (5, 97) and loss is None
    torch.testing.assert_close(logits, every.flatten(0, 1)[positions], atol=1e-6, rtol=0)


def test_forward_is_causal_and_attention_paths_agree(monkeypatch):
    model = make_model(0).eval()
    x = torch.randint(0, 97, (2, 16))
    x2 = x.clone()
    x2[:, 10:] = (x2[:, 10:] + 1) % 97
    with torch.no_grad():
        a, b = model(x)[0], model(x2)[0]
        torch.testing.assert_close(a[:, :10], b[:, :10], atol=1e-6, rtol=0)
        assert not torch.allclose(a[:, 10:], b[:, 10:])
        monkeypatch.setattr(gpt2.F, "scaled_dot_product_attention", explicit_attention)
        torch.testing.assert_close(model(x)[0], a, atol=1e-5, rtol=0)


def test_int32_ids_and_targets_work_like_int64():
    model = make_model(0)
    x = torch.randint(0, 97, (2, 16))
    y = torch.randint(0, 97, (2, 16))
    logits64, loss64 = model(x, y)
    logits32, loss32 = model(x.int(), y.int())
    assert torch.equal(logits32, logits64)
    torch.testing.assert_close(loss32, loss64)


def test_a_sequence_longer_than_the_block_is_refused():
    with pytest.raises(AssertionError, match="sequence of 17 tokens, block_size is 16"):
        make_model(0)(torch.zeros(1, 17, dtype=torch.long))


# ----------------------------------------------------------------------------------------------
# Sampling


def _greedy(model: GPT, idx: torch.Tensor, n: int) -> torch.Tensor:
    with torch.no_grad():
        for _ in range(n):
            logits, _ = model(idx[:, -model.config.block_size :])
            idx = torch.cat((idx, logits[:, -1, :].argmax(dim=-1, keepdim=True)), dim=1)
    return idx


def test_generate_is_reproducible_with_a_seeded_generator():
    model = make_model(0)
    prompt = torch.randint(0, 97, (3, 5), generator=torch.Generator().manual_seed(0))

    def sample(seed):
        return model.generate(prompt, 10, top_k=50, generator=torch.Generator().manual_seed(seed))

    a, b, c = sample(42), sample(42), sample(43)
    assert a.shape == (3, 15)
    assert torch.equal(a[:, :5], prompt)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert model.training  # generate puts the model back in the mode it found it in


def test_generate_top_k_1_is_greedy():
    model = make_model(0)
    model.eval()
    prompt = torch.randint(0, 97, (2, 4), generator=torch.Generator().manual_seed(1))
    out = model.generate(prompt, 8, top_k=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, _greedy(model, prompt, 8))
    assert not model.training
    # temperature does not change the argmax
    out_t = model.generate(prompt, 8, top_k=1, temperature=0.3)
    assert torch.equal(out_t, out)


def test_generate_crops_the_context_to_block_size():
    model = make_model(0)  # block_size 16
    prompt = torch.randint(0, 97, (2, 40), generator=torch.Generator().manual_seed(2))
    out = model.generate(prompt, 6, top_k=1)
    assert out.shape == (2, 46)
    assert torch.equal(out[:, :40], prompt)
    # cropping keeps the *last* block_size tokens
    assert torch.equal(out[:, 40:], _greedy(model, prompt[:, -16:], 6)[:, 16:])


def test_generate_never_samples_padding_of_a_padded_vocab():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=50304, n_layer=1, n_head=2, n_embd=16))
    boost = torch.zeros(50304)
    boost[V:] = 1e4  # make the 47 padding ids overwhelmingly likely
    model.lm_head.register_forward_hook(lambda mod, inp, out: out + boost)
    prompt = torch.randint(0, V, (4, 3), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert model(prompt)[0][:, -1].argmax(dim=-1).min() >= V  # the hook works
    for top_k in (None, 50, 1):
        out = model.generate(prompt, 5, top_k=top_k, generator=torch.Generator().manual_seed(0))
        assert out.shape == (4, 8)
        assert out.max() < V, top_k


# ----------------------------------------------------------------------------------------------
# Optimizer groups


def test_optimizer_groups():
    model = make_model(0)
    opt = model.configure_optimizers(
        weight_decay=0.1, learning_rate=6e-4, betas=(0.9, 0.95), eps=1e-8, verbose=False
    )
    assert isinstance(opt, torch.optim.AdamW)
    names = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), set()).add(n)
    decay_group, no_decay_group = opt.param_groups
    assert decay_group["weight_decay"] == 0.1 and no_decay_group["weight_decay"] == 0.0
    for g in opt.param_groups:
        assert g["lr"] == 6e-4 and g["betas"] == (0.9, 0.95) and g["eps"] == 1e-8
    decay = set().union(*(names[id(p)] for p in decay_group["params"]))
    no_decay = set().union(*(names[id(p)] for p in no_decay_group["params"]))

    expected_decay = {"transformer.wte.weight", "lm_head.weight", "transformer.wpe.weight"}
    expected_no_decay = {"transformer.ln_f.weight", "transformer.ln_f.bias"}
    for i in range(2):
        h = f"transformer.h.{i}."
        expected_decay |= {
            h + s
            for s in (
                "attn.c_attn.weight",
                "attn.c_proj.weight",
                "mlp.c_fc.weight",
                "mlp.c_proj.weight",
            )
        }
        expected_no_decay |= {
            h + s
            for s in (
                "ln_1.weight",
                "ln_1.bias",
                "ln_2.weight",
                "ln_2.bias",
                "attn.c_attn.bias",
                "attn.c_proj.bias",
                "mlp.c_fc.bias",
                "mlp.c_proj.bias",
            )
        }
    assert decay == expected_decay
    assert no_decay == expected_no_decay
    assert len(decay_group["params"]) == 2 * 4 + 2  # wte/lm_head counted once


def test_optimizer_prints_summary(capsys):
    make_model(0).configure_optimizers(0.1, 1e-3)
    out = capsys.readouterr().out
    assert "10 decayed tensors" in out and "18 not decayed" in out and "fused=False" in out


# ----------------------------------------------------------------------------------------------
# FLOPs and MFU


def test_flops_per_token_matches_hand_count():
    cfg = tiny_config()
    model = GPT(cfg)
    C, L, Vc = cfg.n_embd, cfg.n_layer, cfg.vocab_size
    n_no_wpe = Vc * C + L * (12 * C * C + 13 * C) + 2 * C
    assert model.num_parameters(exclude_position_embedding=True) == n_no_wpe
    assert model.flops_per_token(8) == 6 * n_no_wpe + 12 * L * C * 8
    assert model.flops_per_token() == 6 * n_no_wpe + 12 * L * C * cfg.block_size


def test_flops_per_token_gpt2_124m():
    with torch.device("meta"):
        model = GPT(gpt2.MODEL_PRESETS["gpt2"])
    # N without wpe = 124,439,808 - 1024*768 = 123,653,376; attention 12*12*768*1024 = 113,246,208
    assert model.flops_per_token(1024) == 6 * 123_653_376 + 113_246_208 == 855_166_464


# ----------------------------------------------------------------------------------------------
# CLI


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=32, vocab_size=V, n_layer=1, n_head=2, n_embd=16))
    path = tmp_path_factory.mktemp("ckpt") / "model_00010.pt"
    save_checkpoint(path, model, step=10)
    return model, path


def _cpu_args(path, *flags: str) -> list[str]:
    """The sampling CLI's arguments for the checkpoint at path, on the CPU."""
    return ["--init-from", str(path), "--device", "cpu", *flags]


def _cli_samples(capsys, argv):
    assert gpt2.main(argv) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("sample ")]
    return out, lines


def test_cli_samples_from_checkpoint(capsys, tiny_checkpoint, enc):
    model, path = tiny_checkpoint
    prompt = "Hello, I'm a language model,"
    argv = [
        "--init-from",
        str(path),
        "--prompt",
        prompt,
        *"--num-samples 4 --max-new-tokens 8 --seed 42 --device cpu".split(),
    ]
    out1, lines = _cli_samples(capsys, argv)
    assert [line.split(":")[0] for line in lines] == [f"sample {i}" for i in range(4)]
    assert all(line.split(": ", 1)[1].startswith(prompt) for line in lines)
    out2, _ = _cli_samples(capsys, argv)
    assert out1 == out2
    out3, _ = _cli_samples(capsys, argv[:-4] + ["--seed", "7", "--device", "cpu"])
    assert out3 != out1
    # the CLI samples exactly what generate() gives with the same seed
    tokens = enc.encode(prompt)
    idx = torch.tensor([tokens] * 4)
    expected = model.generate(idx, 8, top_k=50, generator=torch.Generator().manual_seed(42))
    assert [line.split(": ", 1)[1] for line in lines] == [
        enc.decode(row) for row in expected.tolist()
    ]


def test_cli_samples_from_huggingface_dir(capsys, hf_pair):
    _, d = hf_pair
    argv = [
        "--init-from",
        str(d),
        "--prompt",
        "The",
        "--max-new-tokens",
        "5",
        "--seed",
        "0",
        "--device",
        "cpu",
    ]
    out1, lines = _cli_samples(capsys, argv)
    assert len(lines) == 4  # --num-samples defaults to 4
    assert all(line.split(": ", 1)[1].startswith("The") for line in lines)
    out2, _ = _cli_samples(capsys, argv)
    assert out1 == out2


def test_cli_missing_path_is_an_error(capsys, tmp_path):
    assert gpt2.main(["--init-from", str(tmp_path / "nope.pt"), "--device", "cpu"]) == 2
    captured = capsys.readouterr()
    hub_names = "gpt2, gpt2-medium, gpt2-large, gpt2-xl"
    assert (
        captured.err
        == f"error: {tmp_path / 'nope.pt'}: no such file, directory, or hub name ({hub_names})\n"
    )
    assert "sample" not in captured.out


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--top-k", "0"], "--top-k must be positive, got 0"),
        (["--temperature", "0"], "--temperature must be positive, got 0.0"),
        (["--num-samples", "0"], "--num-samples must be positive, got 0"),
        (["--max-new-tokens", "-3"], "--max-new-tokens must be positive, got -3"),
        (["--prompt", ""], "--prompt is empty"),
    ],
)
def test_cli_bad_sampling_flags_are_one_line_errors(capsys, tiny_checkpoint, flags, message):
    _, path = tiny_checkpoint
    assert gpt2.main(_cpu_args(path, *flags)) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"error: {message}") and captured.err.count("\n") == 1
    assert captured.out == ""


def test_cli_unavailable_device_is_an_error(capsys, tiny_checkpoint):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    _, path = tiny_checkpoint
    assert gpt2.main(["--init-from", str(path), "--device", "cuda"]) == 2
    assert "error:" in capsys.readouterr().err


def test_cli_help_mentions_every_flag(capsys):
    with pytest.raises(SystemExit) as e:
        gpt2.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in (
        "--init-from",
        "--prompt",
        "--num-samples",
        "--max-new-tokens",
        "--top-k",
        "--temperature",
        "--seed",
        "--device",
    ):
        assert flag in out, flag
    args = gpt2.parse_args([])
    assert (args.init_from, args.num_samples, args.max_new_tokens, args.seed, args.top_k) == (
        "gpt2",
        4,
        32,
        42,
        50,
    )


# ----------------------------------------------------------------------------------------------
# Sampling inputs at their limits: one `error:` line, or a sensible result


def _error_line(capsys) -> str:
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert captured.err.startswith("error: ")
    return captured.err.rstrip("\n")


@pytest.mark.parametrize("temperature", [1e-45, 1e-300])
def test_generate_with_a_tiny_temperature_is_greedy(temperature):
    model = make_model(0)
    prompt = torch.randint(0, 97, (2, 4), generator=torch.Generator().manual_seed(1))
    out = model.generate(
        prompt, 6, top_k=None, temperature=temperature, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(out, _greedy(model, prompt, 6))


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--temperature", "inf"], "--temperature must be finite, got inf"),
        (["--temperature", "nan"], "--temperature must be positive, got nan"),
        (["--seed", str(2**70)], f"--seed must be from 0 to 2**64 - 1, got {2**70}"),
        (["--seed=-1"], "--seed must be from 0 to 2**64 - 1, got -1"),
        (
            ["--max-new-tokens", "1000000000"],
            "--max-new-tokens must be at most 100,000 (each token is a forward pass of the model),"
            " got 1,000,000,000",
        ),
    ],
)
def test_cli_out_of_range_sampling_flags_are_one_line_errors(
    capsys, tiny_checkpoint, flags, message
):
    _, path = tiny_checkpoint
    assert gpt2.main(_cpu_args(path, *flags)) == 2
    assert _error_line(capsys) == f"error: {message}"


def test_cli_largest_seed_samples(capsys, tiny_checkpoint):
    _, path = tiny_checkpoint
    argv = _cpu_args(path, "--seed", str(2**64 - 1), "--max-new-tokens", "2")
    assert len(_cli_samples(capsys, argv)[1]) == 4


def test_cli_prompt_may_hold_the_end_of_text_token(capsys, tiny_checkpoint, monkeypatch):
    _, path = tiny_checkpoint
    prompts, generate = [], GPT.generate

    def recording_generate(self, idx, *args, **kwargs):
        prompts.append(idx)
        return generate(self, idx, *args, **kwargs)

    monkeypatch.setattr(GPT, "generate", recording_generate)
    argv = _cpu_args(path, "--prompt", "a<|endoftext|>b", "--max-new-tokens", "2")
    _, lines = _cli_samples(capsys, argv)
    assert prompts[0].tolist() == [[64, 50256, 65]] * 4
    assert all(line.startswith("sample ") and ": a<|endoftext|>b" in line for line in lines)


def test_cli_more_samples_than_memory_holds_is_a_one_line_error(capsys, tiny_checkpoint):
    _, path = tiny_checkpoint
    argv = _cpu_args(path, "--num-samples", str(10**15), "--max-new-tokens", "1")
    assert gpt2.main(argv) == 2
    n = 10**15
    what = f"sampling at --num-samples {n}"
    assert (
        _error_line(capsys)
        == f"error: cpu ran out of memory in {what}: pass --num-samples {n // 2}"
    )


@pytest.mark.parametrize("config_json", ["{}", "[1]", "{", '{"n_positions": 8}'])
def test_cli_directory_without_a_gpt2_model_is_a_one_line_error(capsys, tmp_path, config_json):
    (tmp_path / "config.json").write_text(config_json)
    (tmp_path / "model.safetensors").write_bytes(b"not safetensors")
    assert gpt2.main(["--init-from", str(tmp_path), "--device", "cpu"]) == 2
    assert _error_line(capsys).startswith(
        f"error: {tmp_path} does not hold a GPT-2 model in Hugging Face's layout ("
    )
