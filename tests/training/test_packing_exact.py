"""Packed micro-batches give the unpacked loss and gradients (issue #15; docs/method.md §3.7).

The same features and seeds are collated twice, plain (rows trimmed to the longest x_t, key
mask) and packed (documents side by side, block-diagonal attention, per-document t and RoPE
positions from 0); the loss and the gradient of every trainable parameter must agree in fp32
within atol 1e-5 (different kernel shapes round differently; nothing else may differ).
"""

from __future__ import annotations

import pytest
import torch

from retrofit.models import FlexMDMModel, LLaDAConfig, LLaDAModelLM
from retrofit.models.packed_attention import PackedLayout, packed_attention
from retrofit.training.collator import FlexMDMCollator, MDMCollator
from retrofit.training.objective import micro_batch_loss
from retrofit.training.packing import PackPlan, plan_rows

PAD, MASK, VOCAB, WIDTH = 1, 95, 96, 40
BOUNDARY = [90, 91]
FIM = {"instruction": [80, 81], "<prefix>": [82], "</prefix>": [83], "<suffix>": [84], "</suffix>": [85]}


def tiny_llada() -> LLaDAModelLM:
    config = LLaDAConfig(
        d_model=32, n_heads=4, n_kv_heads=2, n_layers=3, mlp_hidden_size=64, vocab_size=VOCAB,
        embedding_size=VOCAB, mask_token_id=MASK, pad_token_id=PAD, eos_token_id=PAD, bos_token_id=0,
        max_sequence_length=512, init_std=0.1,
    )  # fmt: skip
    torch.manual_seed(0)
    return LLaDAModelLM(config)


def tiny_flexmdm() -> FlexMDMModel:
    """A graft with random AdaLN and length head, so t and the document of a token matter."""
    model = FlexMDMModel.from_llada(tiny_llada(), seed=0, adaln_group_size=2, canvas_width=WIDTH + 4)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.adaln.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    return model.train()


def features(seed: int = 0) -> list[dict]:
    """Six examples of mixed lengths: plain, with prompts, one infilling row, one with anchors."""
    gen = torch.Generator().manual_seed(seed)
    lengths = [36, 9, 22, 30, 14, 5]
    feats = [{"input_ids": torch.randint(2, 80, (n,), generator=gen).tolist()} for n in lengths]
    feats[1]["prompt_length"] = 4
    feats[2]["prompt_length"] = 10
    feats[3]["infill_cutoff"] = 6
    feats[4]["anchors"] = [2, 7]
    return feats


def loss_and_grads(model, batch, objective: str, normalizer: float = 44.0, head_chunk=None):
    model.zero_grad()
    loss, terms, _ = micro_batch_loss(model, batch, objective, normalizer=normalizer, head_chunk=head_chunk)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), {k: v.detach() for k, v in terms.items()}, grads


def assert_same(a, b) -> None:
    (loss_a, terms_a, grads_a), (loss_b, terms_b, grads_b) = a, b
    torch.testing.assert_close(loss_a, loss_b, rtol=0, atol=1e-5)
    for key in terms_a:
        torch.testing.assert_close(terms_a[key], terms_b[key], rtol=0, atol=1e-5)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 10
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=0, atol=1e-5, msg=name)


@pytest.mark.parametrize("pack_tokens", [None, 45, 64])
@pytest.mark.parametrize("seed", [0, 1])
def test_packed_flexmdm_loss_and_grads_equal_unpacked(pack_tokens, seed) -> None:
    model = tiny_flexmdm()
    common = dict(mask_id=MASK, pad_id=PAD, canvas_width=WIDTH + 4, seed=seed, infill_boundary=BOUNDARY)
    plain = FlexMDMCollator(**common)(features(seed))
    packed = FlexMDMCollator(**common, packing=True, pack_tokens=pack_tokens)(features(seed))
    assert "attention_mask" not in packed and packed["t"].shape == (6,)
    assert int(packed["mask_slots"].sum()) == int(plain["mask_slots"].sum()) > 0
    # computed positions: the documents' n_b + 1 (plus filler), never more than the trimmed rows
    documents = int(plain["attention_mask"].sum()) + 6
    assert documents <= int(packed["num_computed_tokens"]) <= int(plain["num_computed_tokens"])
    if pack_tokens is None:
        assert int(packed["num_computed_tokens"]) == documents  # one row, no filler
    assert_same(loss_and_grads(model, plain, "flexmdm"), loss_and_grads(model, packed, "flexmdm"))


@pytest.mark.parametrize("train_pad_tail", [True, False])
def test_packed_mdm_loss_and_grads_equal_unpacked(train_pad_tail) -> None:
    """The MDM baseline: with the pad tail trained a document is the whole canvas (exactly the
    unpacked rows); without it a document is the real tokens, compared with each example alone
    on its own unpadded canvas."""
    model = tiny_llada().train()
    common = dict(
        mask_id=MASK, pad_id=PAD, canvas_width=WIDTH + 7, seed=3, fim=FIM, train_pad_tail=train_pad_tail
    )
    feats = features(3)
    packed = MDMCollator(**common, packing=True)(feats)
    got = loss_and_grads(model, packed, "mdm", normalizer=47.0)
    if train_pad_tail:
        plain = MDMCollator(**common)(feats)
        assert_same(got, loss_and_grads(model, plain, "mdm", normalizer=47.0))
        return
    # each document alone (batch of one, its own width): sum of per-example losses / B
    plain = MDMCollator(**common)(feats)
    lengths = [int(n) for n in (packed["document_ids"][None] == torch.arange(6)[:, None, None]).sum((1, 2))]
    model.zero_grad()
    total = 0.0
    for b, n in enumerate(lengths):
        one = {
            "input_ids": plain["input_ids"][b : b + 1, :n],
            "targets": plain["targets"][b : b + 1, :n],
            "mask_slots": plain["mask_slots"][b : b + 1, :n],
            "mask_prob": plain["mask_prob"][b : b + 1],
        }
        loss, _, _ = micro_batch_loss(model, one, "mdm", normalizer=47.0)
        (loss / 6).backward()
        total += float(loss) / 6
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert abs(float(got[0]) - total) < 1e-5
    for name in grads:
        torch.testing.assert_close(got[2][name], grads[name], rtol=0, atol=1e-5, msg=name)


def test_chunked_token_head_equals_plain_head() -> None:
    """Chunks of 5 slots recomputed in backward: same loss and gradients as one head call."""
    model = tiny_flexmdm()
    batch = FlexMDMCollator(mask_id=MASK, pad_id=PAD, canvas_width=WIDTH + 4, infill_boundary=BOUNDARY)(
        features()
    )
    assert int(batch["mask_slots"].sum()) > 5 * 3
    assert_same(
        loss_and_grads(model, batch, "flexmdm"), loss_and_grads(model, batch, "flexmdm", head_chunk=5)
    )


@pytest.mark.parametrize("backend", ["flex", "mask"])
def test_packed_attention_backends_equal_segments(backend) -> None:
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 20, 8, generator=gen) for _ in range(3))
    docs = torch.tensor([[0] * 7 + [1] * 9 + [-1] * 4, [2] * 20])
    pos = torch.where(docs[0:1] >= 0, torch.tensor([list(range(7)) + list(range(9)) + [0] * 4]), 0)
    pos = torch.cat([pos, torch.arange(20)[None]])
    reference = packed_attention(q, k, v, PackedLayout.from_document_ids(docs, pos, "segments"))
    got = packed_attention(q, k, v, PackedLayout.from_document_ids(docs, pos, backend))
    torch.testing.assert_close(got, reference, rtol=0, atol=1e-6)
    # a document's output is its own attention alone
    alone = torch.nn.functional.scaled_dot_product_attention(q[:1, :, 7:16], k[:1, :, 7:16], v[:1, :, 7:16])
    torch.testing.assert_close(reference[:1, :, 7:16], alone, rtol=0, atol=0)


def test_plan_rows_first_fit_decreasing_and_errors() -> None:
    assert plan_rows([5, 9, 3, 7, 2], 10) == [[1], [3, 2], [0, 4]]
    plan = PackPlan(torch.tensor([3, 2]), None)
    assert plan.document_ids.tolist() == [[0, 0, 0, 1, 1]]
    assert plan.position_ids.tolist() == [[0, 1, 2, 0, 1]]
    with pytest.raises(ValueError, match="data.pack_tokens is 4"):
        plan_rows([5, 3], 4)
    with pytest.raises(ValueError, match="restart at 0"):
        PackedLayout.from_document_ids(torch.tensor([[0, 0, 1]]), torch.tensor([[0, 1, 2]]))
