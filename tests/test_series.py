"""The training series: the embedded model's own run, caught part-way and shipped by name."""

import json

import numpy as np
import pytest

import eclip_core as ec
from eclip_core.world import embedded


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
