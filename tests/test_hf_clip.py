"""Hugging Face ``transformers``' CLIP as a family: the recorded pass reproduces
``get_image_features`` / ``get_text_features`` at ViT-B-16 sizes, and every explainer gives on
it the maps it gives on the same weights in open_clip (whose pass the reference tests pin);
loading from a ``save_pretrained`` folder; other transformers models refused in one line."""

import json

import open_clip
import pytest
import torch
import torch.nn.functional as F

import eclip_core as ec
from eclip_core.errors import UnsupportedModelError
from eclip_core.explainers import METHODS
from eclip_core.trace.hf_clip import HFClipModel

transformers = pytest.importorskip("transformers", reason="transformers is the hf extra (pip install -e '.[hf]')")

pytestmark = pytest.mark.usefixtures("one_thread")
CHEAP = {"rise": dict(n_masks=8), "integrated_gradients": dict(steps=4), "occlusion": dict(window=1)}


def hf_clip(vision: dict, text: dict, projection: int, *, seed: int = 0, perturb: float = 0.2,
            eos_token_id: int | None = None) -> torch.nn.Module:
    """A random-init ``transformers.CLIPModel``, every 1-D parameter moved off its 0 / 1 init, float64."""
    text = dict(text)
    if eos_token_id is not None:
        text.update(eos_token_id=eos_token_id, bos_token_id=0, pad_token_id=1)
    config = transformers.CLIPConfig(vision_config=vision, text_config=text, projection_dim=projection)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = transformers.CLIPModel(config)
        with torch.no_grad():
            for p in model.parameters():
                if p.ndim == 1:
                    p.add_(perturb * torch.randn_like(p))
    return model.to(torch.float64).eval()


def open_clip_twin(hf) -> torch.nn.Module:
    """The same weights in open_clip's CLIP (q, k, v stacked into in_proj; projections transposed)."""
    v, t = hf.config.vision_config, hf.config.text_config
    model = open_clip.CLIP(
        embed_dim=hf.config.projection_dim, quick_gelu=True,
        vision_cfg=dict(image_size=v.image_size, patch_size=v.patch_size, width=v.hidden_size,
                        layers=v.num_hidden_layers, head_width=v.hidden_size // v.num_attention_heads,
                        mlp_ratio=v.intermediate_size / v.hidden_size),
        text_cfg=dict(context_length=t.max_position_embeddings, vocab_size=t.vocab_size, width=t.hidden_size,
                      heads=t.num_attention_heads, layers=t.num_hidden_layers,
                      mlp_ratio=t.intermediate_size / t.hidden_size))
    h = hf.state_dict()
    out = {"visual.class_embedding": h["vision_model.embeddings.class_embedding"],
           "visual.positional_embedding": h["vision_model.embeddings.position_embedding.weight"],
           "visual.conv1.weight": h["vision_model.embeddings.patch_embedding.weight"],
           "visual.proj": h["visual_projection.weight"].T,
           "token_embedding.weight": h["text_model.embeddings.token_embedding.weight"],
           "positional_embedding": h["text_model.embeddings.position_embedding.weight"],
           "text_projection": h["text_projection.weight"].T, "logit_scale": h["logit_scale"]}
    for ours, theirs in (("visual.ln_pre", "vision_model.pre_layrnorm"), ("visual.ln_post", "vision_model.post_layernorm"),
                         ("ln_final", "text_model.final_layer_norm")):
        for w in ("weight", "bias"):
            out[f"{ours}.{w}"] = h[f"{theirs}.{w}"]
    for ours, theirs, n in (("visual.transformer", "vision_model.encoder", v.num_hidden_layers),
                            ("transformer", "text_model.encoder", t.num_hidden_layers)):
        for i in range(n):
            a, b = f"{ours}.resblocks.{i}", f"{theirs}.layers.{i}"
            for w in ("weight", "bias"):
                out[f"{a}.attn.in_proj_{w}"] = torch.cat([h[f"{b}.self_attn.{p}_proj.{w}"] for p in "qkv"])
                out[f"{a}.attn.out_proj.{w}"] = h[f"{b}.self_attn.out_proj.{w}"]
                out[f"{a}.ln_1.{w}"], out[f"{a}.ln_2.{w}"] = h[f"{b}.layer_norm1.{w}"], h[f"{b}.layer_norm2.{w}"]
                out[f"{a}.mlp.c_fc.{w}"], out[f"{a}.mlp.c_proj.{w}"] = h[f"{b}.mlp.fc1.{w}"], h[f"{b}.mlp.fc2.{w}"]
    model.load_state_dict(out)
    return model.to(torch.float64).eval()


TINY_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                   image_size=48, patch_size=8)
TINY_TEXT = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                 max_position_embeddings=8, vocab_size=64)


@pytest.fixture(scope="module")
def tiny_pair():
    hf = hf_clip(TINY_VISION, TINY_TEXT, 24, seed=5, eos_token_id=63)  # the largest id: open_clip's argmax agrees
    return hf, open_clip_twin(hf)


def relative(got, expected):
    return float((got - expected).abs().max() / expected.abs().max())


def tokens(n: int, length: int, vocab: int, eos: int, seed: int = 0) -> torch.Tensor:
    """Start token, random words, end-of-text at a random place, then end-of-text padding."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, eos, (n, length), generator=g)
    ids[:, 0] = 0
    for row, end in zip(ids, torch.randint(2, length, (n,), generator=g)):
        row[end:] = eos
    return ids


def test_the_recorded_pass_is_get_image_and_text_features_at_vit_b16_sizes():
    """ViT-B-16 shapes (12 blocks of 12 heads, 224 px; a 12-block text tower of 77 tokens),
    random init with perturbed biases and norms, float64, SDPA attention in the model."""
    hf = hf_clip(dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                      image_size=224, patch_size=16),
                 dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8,
                      max_position_embeddings=77, vocab_size=49408), 512, seed=1)
    clip = ec.as_model(hf)
    assert isinstance(clip, HFClipModel) and clip.grid_size == (14, 14) and clip.heads() == 12
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        traced = clip.trace_vision(x).embedding
        own = clip.encode_image(x)
        assert relative(traced, own) <= 1e-6  # measured ~1e-15
        ids = tokens(3, 77, 49408, hf.config.text_config.eos_token_id)
        assert relative(clip.trace_text(ids).embedding, clip.encode_text(ids)) <= 1e-6
        # the configs that predate transformers 4.31 pool at the largest id
        hf.text_model.eos_token_id = 2
        assert relative(clip.trace_text(ids).embedding, clip.encode_text(ids)) <= 1e-6


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_gives_the_open_clip_twins_maps(tiny_pair, method):
    """The same weights in both libraries: the same maps and scores for every registered
    explainer (faithful mode), so each inherits the open_clip family's reference tests."""
    hf, oc = tiny_pair
    x = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = F.normalize(torch.randn(3, 24, generator=torch.Generator().manual_seed(2), dtype=torch.float64), dim=-1)
    ours = ec.explain(hf, x, t, method=method, **CHEAP.get(method, {}))
    twin = ec.explain(oc, x, t, method=method, **CHEAP.get(method, {}))
    assert relative(ours.scores, twin.scores) <= 1e-10
    with torch.no_grad():
        own = F.normalize(ec.as_model(hf).encode_image(x), dim=-1) @ t.T
    assert (ours.scores - own).abs().max() <= 1e-10  # the certificate: the deployed cosine
    scale = twin.maps.abs().max()
    assert float((ours.maps - twin.maps).abs().max()) <= 1e-9 * max(float(scale), 1e-12)
    assert ours.describe(hf) == twin.describe(oc)


def test_reference_mode_and_the_text_branch_match_the_twin(tiny_pair):
    hf, oc = tiny_pair
    keep = torch.randn(1, 3, 56, 72, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    t = F.normalize(torch.randn(2, 24, generator=torch.Generator().manual_seed(4), dtype=torch.float64), dim=-1)
    for route in ("grad_eclip", "attention_eclip"):
        ours = ec.explain(hf, keep, t, method=route, mode="reference")
        twin = ec.explain(oc, keep, t, method=route, mode="reference")
        assert ours.maps.shape == (1, 2, 7, 9) and relative(ours.maps, twin.maps) <= 1e-10
        assert ours.describe(hf)[0].endswith("instead of 4")  # the one-head recompute, in the model's words
    images = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    texts = ["a red square", "two blue circles"]
    for route in ("grad_eclip", "attention_eclip"):
        ours = ec.explain_text(hf, texts, images, method=route, tokenizer=word_ids)
        twin = ec.explain_text(oc, texts, images, method=route, tokenizer=word_ids)
        assert ours.maps.shape == (2, 2, 8) and relative(ours.maps.nan_to_num(), twin.maps.nan_to_num()) <= 1e-10
        assert torch.equal(ours.token_mask, twin.token_mask)


class WordIds:
    """A toy tokenizer for the tiny towers: start token 0, one id per word, end-of-text 63, padding 1."""

    pad_token_id = 1

    def __call__(self, texts, context_length=8):
        ids = torch.full((len(texts), context_length), self.pad_token_id, dtype=torch.long)
        for row, text in zip(ids, texts):
            words = [2 + sum(map(ord, w)) % 60 for w in text.split()]
            row[:len(words) + 2] = torch.tensor([0, *words, 63])
        return ids


word_ids = WordIds()


def test_a_save_pretrained_folder_loads_offline(tmp_path, tiny_pair):
    """Weights and preprocessor config read from the folder (local files only); strings need a
    tokenizer, which this folder does not have, and say so."""
    hf, _ = tiny_pair
    hf.save_pretrained(tmp_path / "clip")
    json.dump({"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]},
              (tmp_path / "clip" / "preprocessor_config.json").open("w"))
    clip = ec.load_model(tmp_path / "clip")
    assert isinstance(clip, HFClipModel) and clip.input_normalisation() == ((0.5,) * 3, (0.25,) * 3)
    clip.module.to(torch.float64)
    x = torch.randn(1, 3, 48, 48, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    with torch.no_grad():
        assert relative(clip.encode_image(x), ec.as_model(hf).encode_image(x)) <= 1e-12
    with pytest.raises(ec.InputError, match="strings need the model's tokenizer"):
        ec.explain(clip, x, ["a dog"])


def test_other_transformers_models_and_folders_are_refused_in_one_line(tmp_path):
    """A transformers model that is neither a CLIPModel nor a SiglipModel (here CLIP's image
    tower alone, which has no text tower and no projection) and a folder of another model_type."""
    vision = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**TINY_VISION)).eval()
    with pytest.raises(UnsupportedModelError, match="CLIPVisionModel") as err:
        ec.as_model(vision)
    assert "\n" not in str(err.value)
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(UnsupportedModelError, match="model_type 'bert' is not supported"):
        ec.load_model(folder)


def test_a_transformers_tokenizer_object_is_used_as_the_model_reads_text(tiny_pair):
    """A tokenizer object of transformers (here a word-level one built offline) is wrapped once:
    strings become (K, context) ids padded to the context length, end-of-text kept, and the
    scores are the model's cosine with get_text_features of those ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    hf, _ = tiny_pair
    words = {"<s>": 0, "<pad>": 1, "a": 2, "red": 3, "square": 4, "two": 5, "blue": 6, "circles": 7, "</s>": 63}
    core = Tokenizer(models.WordLevel(words, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 63)])
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>",
                                                     bos_token="<s>")
    clip = ec.as_model(hf, tokenizer=tokenizer)
    ids = clip.tokenize(["a red square", "two blue circles"])
    assert ids.tolist() == [[0, 2, 3, 4, 63, 1, 1, 1], [0, 5, 6, 7, 63, 1, 1, 1]]
    x = torch.randn(1, 3, 48, 48, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    got = ec.explain(hf, x, ["a red square", "two blue circles"], method="attention_eclip", tokenizer=tokenizer)
    with torch.no_grad():
        own = F.normalize(clip.encode_image(x), dim=-1) @ F.normalize(clip.encode_text(ids), dim=-1).T
    assert (got.scores - own).abs().max() <= 1e-12
