"""The recorded forward pass is the original model's forward pass."""

import torch

import eclip_core as ec
from eclip_core import trace_text, trace_vision


def test_vision_trace_reproduces_encode_image(vit_b16, images_224):
    with torch.no_grad():
        expected = vit_b16.encode_image(images_224)
        trace = trace_vision(vit_b16, images_224)
    diff = (trace.embedding - expected).abs().max().item()
    print(f"vision trace vs encode_image: max abs diff {diff:.2e}")
    assert diff <= 1e-5
    assert trace.grid == (14, 14)
    assert len(trace.blocks) == 12


def test_vision_trace_records_per_head_tensors(vit_b16, images_224):
    with torch.no_grad():
        trace = trace_vision(vit_b16, images_224)
    rec = trace.blocks[-1]
    assert rec.q.shape == rec.k.shape == rec.v.shape == (2, 12, 197, 64)
    assert rec.attn.shape == (2, 12, 197, 197)
    assert torch.allclose(rec.attn.sum(-1), torch.ones(2, 12, 197), atol=1e-5)
    assert rec.attn_out.shape == rec.x_in.shape == rec.x_out.shape == (2, 197, 768)
    # each block's output is the next block's input
    assert all(a.x_out is b.x_in for a, b in zip(trace.blocks, trace.blocks[1:]))


def test_text_trace_reproduces_encode_text(vit_b16, tokenizer_b16):
    tokens = tokenizer_b16(["a dog", "a photo of a cat sitting on a red mat"])
    with torch.no_grad():
        expected = vit_b16.encode_text(tokens)
        trace = trace_text(vit_b16, tokens)
    diff = (trace.embedding - expected).abs().max().item()
    print(f"text trace vs encode_text: max abs diff {diff:.2e}")
    assert diff <= 1e-5
    # causal mask: no token attends to a later one
    attn = trace.blocks[0].attn
    assert attn.triu(diagonal=1).abs().max().item() == 0.0
    assert torch.equal(trace.pool_index, tokens.argmax(-1))


def test_gradients_flow_through_recorded_attention(vit_b16, images_224):
    trace = trace_vision(vit_b16, images_224[:1])
    leaves = [trace.blocks[0].attn, trace.blocks[-1].attn, trace.blocks[-1].attn_out]
    grads = torch.autograd.grad(trace.embedding.sum(), leaves)
    for g in grads:
        assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_one_head_recompute_is_another_function(vit_b16, images_224):
    with torch.no_grad():
        own = trace_vision(vit_b16, images_224).embedding
        one_head = trace_vision(vit_b16, images_224, ec.Departures(heads=1)).embedding
    assert (own - one_head).abs().max() > 1e-3


def test_recording_only_the_last_block_gives_the_same_last_block(vit_b16, images_224):
    with torch.no_grad():
        full = trace_vision(vit_b16, images_224)
        last = trace_vision(vit_b16, images_224, record="last")
    assert len(last.blocks) == 1
    assert (last.embedding - full.embedding).abs().max() <= 1e-5
    assert (last.blocks[0].attn - full.blocks[-1].attn).abs().max() <= 1e-5
