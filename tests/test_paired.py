"""Per-image targets: each image explained for its own texts costs only those texts."""

import pytest
import torch
import torch.nn.functional as F

import eclip_core as ec
from eclip_core.world import shapes
from eclip_core.evaluation import evaluate


@pytest.mark.parametrize("method", list(ec.METHODS))
def test_paired_targets_equal_one_call_per_image(one_head_clip, method, one_thread):
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(7))
    bank = F.normalize(torch.randn(5, 32, generator=torch.Generator().manual_seed(8)), dim=-1)
    own = torch.stack([bank[[0, 3]], bank[[2, 1]], bank[[4, 4]]])  # (B=3, K=2, E)
    options = {"n_masks": 20} if method == "rise" else {}
    paired = ec.explain(one_head_clip, x, own, method, **options)
    assert paired.maps.shape[:2] == (3, 2)
    for b in range(3):
        single = ec.explain(one_head_clip, x[b:b + 1], own[b], method, **options)
        assert torch.allclose(paired.maps[b], single.maps[0], rtol=1e-4, atol=1e-7), (method, b)
        assert torch.allclose(paired.scores[b], single.scores[0], atol=1e-6)


def test_paired_strings_and_their_errors():
    bundle = ec.load_model()
    scenes = shapes.eval_set(2, 1)
    images = [s.image for s in scenes]
    own = [[f"a {s.objects[0].phrase}"] for s in scenes]
    paired = ec.explain(bundle, images, own)
    for b, image in enumerate(images):
        single = ec.explain(bundle, [image], own[b])
        assert torch.allclose(paired.maps[b], single.maps[0], atol=1e-6)
    with pytest.raises(ec.InputError, match="2 lists of texts for 1 images"):
        ec.explain(bundle, images[:1], own)
    with pytest.raises(ec.InputError, match="image 1 has an empty list of texts"):
        ec.explain(bundle, images, [own[0], []])


def test_lists_of_different_lengths_cost_their_pairs(monkeypatch):
    """Image b explained for its own texts, lists of lengths 1, 3, 1, 2: each image's maps
    equal a call for it alone, the padding is NaN and marked, and the explainer is asked for
    exactly the 7 (image, text) pairs, not 4 images x 3 texts."""
    from eclip_core.explainers import entry

    bundle = ec.load_model()
    scenes = shapes.eval_set(4, 2)
    images = [s.image for s in scenes]
    own = [["a red circle"], ["a blue square", "a red circle", "a green triangle"],
           ["a green triangle"], ["a blue square", "a yellow star"]]
    asked: list[tuple[int, int]] = []
    wrap = entry.grad_mode_independent

    def counting(fn):
        def run(model, x, targets, **kw):
            asked.append((len(x), targets.shape[-2]))
            return wrap(fn)(model, x, targets, **kw)
        return run

    monkeypatch.setattr(entry, "grad_mode_independent", counting)
    paired = ec.explain(bundle, images, own, "grad_eclip")
    monkeypatch.undo()
    assert sum(b * k for b, k in asked) == 7 and len(asked) == 3
    assert paired.maps.shape[:2] == (4, 3) and paired.target_mask is not None
    assert paired.target_mask.sum(1).tolist() == [1, 3, 1, 2]
    assert torch.isnan(paired.maps[~paired.target_mask]).all()
    assert torch.isnan(paired.scores[~paired.target_mask]).all()
    for b, image in enumerate(images):
        single = ec.explain(bundle, [image], own[b], "grad_eclip")
        n = len(own[b])
        assert torch.allclose(paired.maps[b, :n], single.maps[0], atol=1e-6)
        assert torch.allclose(paired.scores[b, :n], single.scores[0], atol=1e-6)
        assert torch.equal(paired.per_image()[b], paired.maps[b, :n])
    reference = ec.explain(bundle, images, own, "grad_eclip", mode="reference")
    assert reference.scores_original is not None
    assert torch.isnan(reference.scores_original[~reference.target_mask]).all()
    assert torch.isfinite(reference.scores_original[reference.target_mask]).all()


def test_localisation_only_evaluation_measures_no_curve():
    bundle = ec.load_model()
    result = evaluate(bundle, shapes.eval_set(6, 1), ["attention_eclip"], curves=(), timing=False)
    assert result.curves == {} and "deletion_auc" not in result.per_image
    assert result.per_image["pointing_game"].between(0, 1).all()
    with pytest.raises(ec.InputError, match="curves must be among"):
        evaluate(bundle, shapes.eval_set(2, 1), ["attention"], curves=("roc",), timing=False)
