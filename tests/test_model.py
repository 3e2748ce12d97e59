"""Numerics of the model: logits, masking, losses, towers and parity between equivalent paths."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from taidpt.clip.image_encoder import ResNetDenseEncoder, interpolate_grid_embedding
from taidpt.networks.losses import asl_loss, bce_loss, double_loss, ranking_loss
from taidpt.networks.model import (
    TaIDPTModel,
    ZeroShotDenseModel,
    global_logits,
    l2_normalize,
    local_logits,
)
from taidpt.clip.text_encoder import TextTower, causal_mask, eot_positions


# --------------------------------------------------------------------------- logits by hand
def test_global_logits_by_hand():
    f = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0], [math.sqrt(0.5), math.sqrt(0.5)]])
    z = global_logits(f, t, 4.0)
    expected = 4.0 * torch.tensor([[1.0, 0.0, math.sqrt(0.5)], [0.6, 0.8, 1.4 * math.sqrt(0.5)]])
    assert torch.allclose(z, expected, atol=1e-6)


def test_local_logits_by_hand():
    # one sample, two locations, one class; cosines 1.0 and 0.0
    dense = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    text = torch.tensor([[1.0, 0.0]])
    tau, s = 2.0, 4.0
    w1 = math.exp(tau * 1.0) / (math.exp(tau * 1.0) + math.exp(0.0))
    expected = s * (w1 * 1.0 + (1 - w1) * 0.0)
    z = local_logits(dense, text, tau, s)
    assert z.shape == (1, 1)
    assert z.item() == pytest.approx(expected, abs=1e-6)


def test_padding_is_masked_out_of_the_softmax():
    torch.manual_seed(0)
    dense = l2_normalize(torch.randn(3, 6, 8))
    text = l2_normalize(torch.randn(5, 8))
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    z = local_logits(dense, text, 50.0, 4.0, mask)
    # changing what sits at padded positions must not change anything
    garbage = dense.clone()
    garbage[~mask] = l2_normalize(torch.randn(int((~mask).sum()), 8))
    assert torch.equal(local_logits(garbage, text, 50.0, 4.0, mask), z)
    # and each row equals the computation over its real positions only
    for b in range(3):
        real = dense[b : b + 1, mask[b]]
        assert torch.allclose(z[b : b + 1], local_logits(real, text, 50.0, 4.0), atol=1e-6)


# --------------------------------------------------------------------------- losses
def _ranking_brute(z, y, margin=1.0):
    total = 0.0
    for b in range(z.shape[0]):
        for p in range(z.shape[1]):
            for n in range(z.shape[1]):
                if y[b, p] == 1 and y[b, n] == 0:
                    total += max(0.0, margin - float(z[b, p]) + float(z[b, n]))
    return total / z.shape[0]


def test_ranking_loss_matches_brute_force_and_keeps_inputs():
    torch.manual_seed(1)
    z = torch.randn(4, 6) * 2
    y = torch.tensor([[1, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 1], [1, 1, 1, 0, 0, 0], [0, 1, 0, 0, 0, 0]]).float()
    z_before = z.clone()
    loss = ranking_loss(z, y)
    assert loss.item() == pytest.approx(_ranking_brute(z, y), rel=1e-6)
    assert torch.equal(z, z_before)


def test_ranking_loss_hand_value():
    z = torch.tensor([[2.0, 0.5, 1.8]])
    y = torch.tensor([[1.0, 0.0, 0.0]])
    # pairs (p=0, n=1): 1 - 2 + 0.5 = -0.5 -> 0 ; (p=0, n=2): 1 - 2 + 1.8 = 0.8
    assert ranking_loss(z, y).item() == pytest.approx(0.8)


def test_double_loss_sums_branches_and_alternatives():
    torch.manual_seed(2)
    zg, zl = torch.randn(3, 4), torch.randn(3, 4)
    y = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0], [1, 1, 0, 0]]).float()
    assert double_loss("double_ranking", zg, zl, y).item() == pytest.approx(
        (ranking_loss(zg, y) + ranking_loss(zl, y)).item())
    assert bce_loss(zg, y).item() == pytest.approx(F.binary_cross_entropy_with_logits(zg, y).item())
    assert double_loss("ranking", zg, zl, y).item() == pytest.approx(ranking_loss(zg, y).item())
    a = asl_loss(zg, y)
    assert torch.isfinite(a) and a.item() > 0
    with pytest.raises(ValueError, match="unknown loss"):
        double_loss("hinge", zg, zl, y)


def test_asl_focusing_weights_have_no_gradient():
    z = torch.tensor([[3.0, -3.0]], requires_grad=True)
    y = torch.tensor([[1.0, 0.0]])
    asl_loss(z, y).backward()
    # d/dz of -w*log(sigmoid(z)) with constant w = -w * (1 - sigmoid(z)); w = (1 - p)^1
    p = torch.sigmoid(torch.tensor(3.0))
    expected = -((1 - p) * (1 - p)) / 2  # mean over 2 entries
    assert z.grad[0, 0].item() == pytest.approx(expected.item(), rel=1e-5)


# --------------------------------------------------------------------------- towers
def test_text_tower_matches_open_clip_and_causal_cut(tiny_rn):
    tower = TextTower(tiny_rn)
    ids = tower.tokenize(["a dog next to a cat", "a photo of many hot dogs on a table near a red car"])
    with torch.no_grad():
        ours = tower.encode_ids(ids, trim=True)
        full = tower.encode_ids(ids, trim=False)
        ref = tiny_rn.encode_text(ids)
        seq_cut, cut_ids = tower.encode_sequence(ids, trim=True)
        seq_full, _ = tower.encode_sequence(ids, trim=False)
    assert torch.allclose(full, ref, atol=1e-5)
    assert torch.allclose(ours, ref, atol=1e-5)
    assert cut_ids.shape[1] == int(eot_positions(ids).max()) + 1 < 77
    assert torch.allclose(seq_cut, seq_full[:, : cut_ids.shape[1]], atol=1e-5)


def test_causal_mask_shape_and_values():
    m = causal_mask(4)
    assert m.shape == (4, 4)
    assert torch.all(m.tril() == 0)
    assert torch.isinf(m[0, 1]) and m[0, 1] < 0


def test_resnet_global_feature_matches_open_clip_pool(tiny_rn):
    enc = ResNetDenseEncoder(tiny_rn.visual)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        fmap = enc.trunk(x)
        ours = enc.global_feature(fmap, use_pos=True)
        ref = tiny_rn.visual(x)
        dense = enc.dense_features(fmap)
    assert fmap.shape[-2:] == (2, 2)
    assert torch.allclose(ours, ref, atol=1e-5)
    pool = tiny_rn.visual.attnpool
    manual = F.linear(F.linear(fmap.flatten(2).transpose(1, 2), pool.v_proj.weight, pool.v_proj.bias),
                      pool.c_proj.weight, pool.c_proj.bias)
    assert torch.allclose(dense, manual, atol=1e-6)
    assert dense.shape == (2, 4, 64)


def test_global_feature_without_positional_embedding_differs(tiny_rn):
    enc = ResNetDenseEncoder(tiny_rn.visual)
    with torch.no_grad():
        fmap = enc.trunk(torch.randn(1, 3, 64, 64))
        with_pos, without = enc.global_feature(fmap, True), enc.global_feature(fmap, False)
        pool = tiny_rn.visual.attnpool
        saved = pool.positional_embedding.detach().clone()
        pool.positional_embedding.zero_()
        try:
            zeroed = tiny_rn.visual.attnpool(fmap)
        finally:
            pool.positional_embedding.copy_(saved)
    assert not torch.allclose(with_pos, without)
    assert torch.allclose(without, zeroed, atol=1e-5)


def test_positional_embedding_interpolation():
    pos = torch.randn(1 + 7 * 7, 16)
    assert interpolate_grid_embedding(pos, 7, 7) is pos
    big = interpolate_grid_embedding(pos, 14, 14)
    assert big.shape == (1 + 14 * 14, 16)
    assert torch.equal(big[0], pos[0])  # the class/mean slot is not interpolated
    # same recipe as the reference: bicubic with scale factor (side + 0.1) / 7
    grid = pos[1:].reshape(1, 7, 7, 16).permute(0, 3, 1, 2)
    ref = F.interpolate(grid, scale_factor=(14.1 / 7, 14.1 / 7), mode="bicubic")
    assert torch.allclose(big[1:], ref.permute(0, 2, 3, 1).reshape(196, 16), atol=1e-6)
    const = torch.ones(1 + 49, 4)
    assert torch.allclose(interpolate_grid_embedding(const, 10, 10), torch.ones(101, 4), atol=1e-5)


def test_resnet_at_twice_the_native_size(tiny_rn):
    model = TaIDPTModel(tiny_rn, ["circle", "square"], n_ctx=4, use_pos_embed=True)
    with torch.no_grad():
        zg, zl = model(torch.randn(2, 3, 128, 128))
    assert zg.shape == zl.shape == (2, 2)
    assert torch.isfinite(zg).all() and torch.isfinite(zl).all()


def test_vit_dense_features(tiny_vit):
    model = TaIDPTModel(tiny_vit, ["circle", "square", "star"], n_ctx=4)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        glob, dense = model.image(x)
        ref = tiny_vit.visual(x)
        _, dense_big = model.image(torch.randn(1, 3, 96, 96))
    assert torch.allclose(glob, ref, atol=1e-5)
    assert dense.shape == (2, 16, 64)
    assert dense_big.shape == (1, 36, 64)


# --------------------------------------------------------------------------- prompts
def test_prompts_are_built_around_the_class_name(tiny_rn):
    model = TaIDPTModel(tiny_rn, ["dog", "hot_dog", "traffic light"], n_ctx=4)
    pl = model.prompt_learner
    ids = pl.token_ids
    tok = model.text.tokenize(["X X X X hot dog."])[0]
    assert torch.equal(ids[1], tok)
    g, l = pl(None)
    assert g.shape == (3, 77, 64)
    assert torch.equal(g[:, 1:5], pl.ctx.unsqueeze(0).expand(3, -1, -1))
    assert torch.equal(l[:, 1:5], pl.ctx_double.unsqueeze(0).expand(3, -1, -1))
    emb = model.text.embed(ids)
    assert torch.equal(g[:, 5:], emb[:, 5:])
    assert pl.length == int(pl.eot.max()) + 1
    # checkpoints hold the contexts only
    assert set(pl.state_dict()) == {"ctx", "ctx_double"}


def test_class_specific_and_word_initialised_contexts(tiny_rn):
    csc = TaIDPTModel(tiny_rn, ["a", "b"], n_ctx=3, csc=True)
    assert csc.prompt_learner.ctx.shape == (2, 3, 64)
    init = TaIDPTModel(tiny_rn, ["a", "b"], ctx_init="a photo of a")
    assert init.prompt_learner.ctx.shape == (4, 64)
    emb = init.text.embed(init.text.tokenize(["a photo of a"]))[0, 1:5]
    assert torch.equal(init.prompt_learner.ctx, emb)
    assert torch.equal(init.prompt_learner.ctx_double, emb)
    for pos in ("front", "middle"):
        m = TaIDPTModel(tiny_rn, ["dog", "hot dog"], n_ctx=4, class_token_position=pos)
        t_g, t_l = m.class_embeddings()
        assert t_g.shape == (2, 64)


def test_trimmed_class_embeddings_equal_full_length(tiny_rn):
    trimmed = TaIDPTModel(tiny_rn, ["dog", "potted plant", "tv"], n_ctx=16)
    full = TaIDPTModel(tiny_rn, ["dog", "potted plant", "tv"], n_ctx=16, trim_tokens=False)
    full.prompt_learner.load_state_dict(trimmed.prompt_learner.state_dict())
    with torch.no_grad():
        a, b = trimmed.class_embeddings(), full.class_embeddings()
    assert torch.allclose(a[0], b[0], atol=1e-5) and torch.allclose(a[1], b[1], atol=1e-5)


# --------------------------------------------------------------------------- whole model
def _reference_caption_logits(clip, model, ids):
    """The reference's caption forward: 77 tokens, every position, -1e4 on padding."""
    with torch.no_grad():
        x = clip.token_embedding(ids) + clip.positional_embedding
        x = clip.transformer(x, attn_mask=clip.attn_mask)
        seq = clip.ln_final(x) @ clip.text_projection  # [B, 77, D]
        t_g, t_l = model.class_embeddings()
    glob = seq[torch.arange(ids.shape[0]), ids.argmax(-1)]
    glob = glob / glob.norm(dim=-1, keepdim=True)
    loc = (seq / seq.norm(dim=-1, keepdim=True)).permute(1, 0, 2)  # [L, B, D]
    z_g = 4.0 * glob @ t_g.t()
    sim = loc @ t_l.t()  # [L, B, C]
    sim = sim + (ids == 0).long().t()[:, :, None] * -10000
    prob = torch.softmax(sim * 50.0, dim=0)
    z_l = torch.sum(4.0 * sim * prob, dim=0)
    return z_g, z_l


def test_caption_logits_match_reference_formula(tiny_rn):
    torch.manual_seed(3)
    model = TaIDPTModel(tiny_rn, ["dog", "cat", "hot dog", "person"], n_ctx=4)
    ids = model.text.tokenize(["a dog sleeping", "a man holding a hot dog next to a cat on the sofa", "cats"])
    with torch.no_grad():
        zg, zl = model.caption_logits(model.encode_captions(ids))
    rg, rl = _reference_caption_logits(tiny_rn, model, ids)
    assert torch.allclose(zg, rg, atol=1e-4)
    assert torch.allclose(zl, rl, atol=1e-4)


def test_image_scorer_equals_forward(tiny_rn):
    model = TaIDPTModel(tiny_rn, ["dog", "cat", "bird"], n_ctx=4, merge_rate=0.3)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        zg, zl = model(x)
        scores, sg, sl = model.image_scorer()(x)
    assert torch.allclose(zg, sg, atol=1e-6) and torch.allclose(zl, sl, atol=1e-6)
    assert torch.allclose(scores, 0.3 * zg + 0.7 * zl, atol=1e-6)


def test_only_prompts_train_and_clip_stays_in_eval(tiny_rn):
    model = TaIDPTModel(tiny_rn, ["dog", "cat"], n_ctx=4)
    model.train()
    assert not tiny_rn.training and not tiny_rn.visual.bn1.training
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"prompt_learner.ctx", "prompt_learner.ctx_double"}
    ids = model.text.tokenize(["a dog", "a cat and a dog"])
    zg, zl = model.caption_logits(model.encode_captions(ids))
    double_loss("double_ranking", zg, zl, torch.tensor([[1.0, 0.0], [1.0, 1.0]])).backward()
    assert model.prompt_learner.ctx.grad is not None and model.prompt_learner.ctx.grad.abs().sum() > 0


def test_zero_shot_global_equals_clip_zero_shot(tiny_rn):
    zs = ZeroShotDenseModel(tiny_rn, ["dog", "cat"])
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        zg, zl = zs(x)
        img = l2_normalize(tiny_rn.encode_image(x))
        txt = l2_normalize(tiny_rn.encode_text(zs.text.tokenize(["a photo of a dog.", "a photo of a cat."])))
        ref = tiny_rn.logit_scale.exp() * img @ txt.t()
    assert torch.allclose(zg, ref, atol=1e-4)
    assert zl.shape == (2, 2)


@pytest.mark.parametrize("trim", [True, False])
def test_shared_prefix_equals_full_prompts(tiny_rn, trim):
    names = ["dog", "potted plant", "tv", "hair drier", "person"]
    shared = TaIDPTModel(tiny_rn, names, n_ctx=16, trim_tokens=trim)
    full = TaIDPTModel(tiny_rn, names, n_ctx=16, trim_tokens=trim, shared_prefix=False)
    full.prompt_learner.load_state_dict(shared.prompt_learner.state_dict())
    assert shared.shared_prefix and not full.shared_prefix
    a, b = shared.class_embeddings(), full.class_embeddings()
    assert torch.allclose(a[0], b[0], atol=1e-5) and torch.allclose(a[1], b[1], atol=1e-5)
    # gradients agree too
    (a[0].sum() + 2 * a[1].sum()).backward()
    (b[0].sum() + 2 * b[1].sum()).backward()
    for p, q in zip(shared.prompt_learner.parameters(), full.prompt_learner.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-4)


def test_shared_prefix_is_off_when_it_cannot_apply(tiny_rn):
    assert not TaIDPTModel(tiny_rn, ["a", "b"], n_ctx=4, csc=True).shared_prefix
    assert not TaIDPTModel(tiny_rn, ["a", "b"], n_ctx=4, class_token_position="front").shared_prefix
