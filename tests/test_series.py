"""The training series and P2 as a curve (eclip_core.series), on constructed cases and on the
shipped checkpoints."""

import json

import numpy as np
import pandas as pd
import pytest

import eclip_core as ec
from eclip_core.world import embedded, shapes
from eclip_core.errors import InputError
from eclip_core.paper.p2 import SeriesStudy, series_study


def constructed(right_fraction=(0.1, 0.5, 0.9), n=20, n_multi=7):
    """Three checkpoints; a 'good' map points at the object exactly when the model is right, a
    'flat' one always, a 'bad' one exactly when it is wrong. The rows come shuffled, so the
    study must line scenes, methods and checkpoints up itself."""
    single, cf = [], []
    for c, fraction in enumerate(right_fraction):
        right = np.arange(n) < round(fraction * n)
        right = right[(np.arange(n) * 7 + c) % n]  # each checkpoint right on other scenes
        noisy = (np.arange(n) + c) % 2 == 0  # half the scenes, other ones on each checkpoint
        for method, pointing in (("good", right), ("flat", np.ones(n, bool)), ("bad", ~right),
                                 ("noisy", noisy)):
            for scene in range(n):
                single.append({"checkpoint": f"c{c}", "step": 10 ** c, "method": method, "scene": scene,
                               "right": bool(right[scene]), "pointing_game": float(pointing[scene]),
                               "energy_in_mask": 0.5})
            for scene in range(n_multi):
                for target in range(2):
                    cf.append({"checkpoint": f"c{c}", "step": 10 ** c, "method": method, "scene": scene,
                               "target_object": target,
                               "cf_correlation": 2 * fraction if method == "good" else 0.3})
    shuffle = dict(frac=1.0, random_state=0)
    return SeriesStudy(pd.DataFrame(single).sample(**shuffle), pd.DataFrame(cf).sample(**shuffle),
                       ["c0", "c1", "c2"], [1, 10, 100], ["good", "flat", "bad", "noisy"])


def test_slopes_on_a_constructed_series():
    study = constructed()
    np.testing.assert_allclose(study.accuracy(), [0.1, 0.5, 0.9])
    pointing = study.slopes("pointing_game", n_boot=300)
    # good: quality equals accuracy in every resample, so slope 1 with a zero-width interval
    assert pointing.loc["good", ["slope", "slope_low", "slope_high"]].tolist() == pytest.approx([1, 1, 1])
    assert pointing.loc["bad", ["slope", "slope_low", "slope_high"]].tolist() == pytest.approx([-1, -1, -1])
    assert pointing.loc["flat", ["slope", "slope_low", "slope_high"]].tolist() == pytest.approx([0, 0, 0])
    assert pointing["verdict"].to_dict() == {"good": "aligned", "flat": "no evidence", "bad": "reversed",
                                             "noisy": "no evidence"}
    assert pointing.loc["noisy", "slope_low"] < 0 < pointing.loc["noisy", "slope_high"]  # holds 0
    assert pointing.loc["good", "correlation"] == pytest.approx(1.0)
    assert (pointing.loc["good", "first"], pointing.loc["good", "last"]) == pytest.approx((0.1, 0.9))
    cf = study.slopes("cf_correlation", n_boot=300)
    assert cf.loc["good", "slope"] == pytest.approx(2.0)  # 2 x accuracy
    assert cf.loc["flat", "slope"] == pytest.approx(0.0)
    assert cf.loc["good", "slope_low"] > 0  # accuracies resampled, the quality exact: still above 0
    energy = study.slopes("energy_in_mask", n_boot=100)
    assert set(energy["verdict"]) == {"no evidence"}
    assert energy["slope_low"].tolist() == energy["slope_high"].tolist() == [0, 0, 0, 0]  # exactly: constant
    curves = study.curves()
    assert len(curves) == 12 and list(curves.columns[-3:]) == ["pointing_game", "energy_in_mask", "cf_correlation"]
    with pytest.raises(InputError, match="column"):
        study.slopes("deletion_auc")
    assert cf.attrs["n"] == 7 and pointing.attrs["n"] == 20


def test_a_malformed_series_is_refused():
    study = constructed()
    with pytest.raises(InputError, match="twice"):
        SeriesStudy(study.single, study.counterfactual, ["c0", "c0", "c2"], [1, 1, 100], study.methods)
    with pytest.raises(InputError, match="twice"):
        SeriesStudy(pd.concat([study.single, study.single.iloc[:1]]), study.counterfactual,
                    study.checkpoints, study.steps, study.methods)
    fewer = study.single[~((study.single["checkpoint"] == "c1") & (study.single["scene"] == 3))]
    with pytest.raises(InputError, match="same scenes"):
        SeriesStudy(fewer, study.counterfactual, study.checkpoints, study.steps, study.methods)
    with pytest.raises(InputError, match="accuracies are all equal"):
        constructed(right_fraction=(0.5, 0.5, 0.5)).slopes("pointing_game")


def test_a_slope_reads_the_checkpoints_accuracies_not_their_order():
    """Checkpoints whose accuracy falls: a map that follows the model falls with it, and its
    slope against accuracy is still +1."""
    study = constructed(right_fraction=(0.9, 0.5, 0.1))
    assert study.slopes("pointing_game", n_boot=100).loc["good", "slope"] == pytest.approx(1.0)


def test_the_series_ships_and_loads_by_name():
    steps = embedded.SERIES_STEPS
    assert list(embedded.SERIES_MODELS.values()) == list(steps) and steps == tuple(sorted(steps))
    assert set(embedded.SERIES_MODELS) <= set(ec.available_models())
    total = 0
    for step in steps[:-1]:
        directory = embedded.series_checkpoint_dir(step)
        embedded.verify_weights(directory)  # present and matching its checksum
        total += (directory / embedded.WEIGHTS_FILE).stat().st_size
        assert embedded.read_config(directory) == embedded.read_config(embedded.EMBEDDED_DIR)
    assert total <= 10 * 1024 * 1024
    # one run: the shipped model is its last checkpoint, and each checkpoint records its step
    record = json.loads((embedded.EMBEDDED_DIR / embedded.METRICS_FILE).read_text())["training"]
    assert (record["steps"], tuple(record["checkpoints"])) == (steps[-1], steps)
    for step in steps[:-1]:
        kept = json.loads((embedded.series_checkpoint_dir(step) / embedded.METRICS_FILE).read_text())
        assert kept["step"] == step and 0 <= kept["metrics"]["single_top1"] <= 1
    final = ec.load_model(f"eclip-shapes-step-{steps[-1]}").model.state_dict()
    for name, tensor in ec.load_model().model.state_dict().items():
        assert np.array_equal(final[name].numpy(), tensor.numpy())
    with pytest.raises(ec.ModelLoadError, match="ships its own weights"):
        ec.load_model(f"eclip-shapes-step-{steps[0]}", pretrained="x.safetensors")


def test_series_study_on_two_shipped_checkpoints():
    """On the first and last checkpoints: accuracy rises from near chance, and the edges
    control, blind to the model, does not move (its slope is exactly 0)."""
    first, last = embedded.SERIES_STEPS[0], embedded.SERIES_STEPS[-1]
    checkpoints = [(f"step {s}", s, ec.load_model(f"eclip-shapes-step-{s}")) for s in (first, last)]
    single = shapes.eval_set(16, 1, seed=shapes.EVAL_SEED + 11)
    multi = shapes.eval_set(3, 3, seed=shapes.EVAL_SEED + 11)
    study = series_study(checkpoints, ["edges", "attention_eclip"], single, multi)
    accuracy = study.accuracy()
    assert accuracy[0] < 0.3 < 0.8 < accuracy[1]
    slopes = study.slopes("pointing_game", n_boot=200)
    assert slopes.loc["edges", ["slope", "slope_low", "slope_high"]].tolist() == [0, 0, 0]
    assert slopes.loc["edges", "verdict"] == "no evidence"
    assert set(study.counterfactual["scene"]) == {0, 1, 2}
    with pytest.raises(InputError, match="one object"):
        series_study(checkpoints, ["edges"], multi, multi)
    with pytest.raises(InputError, match="two checkpoints"):
        series_study(checkpoints[:1], ["edges"], single, multi)
