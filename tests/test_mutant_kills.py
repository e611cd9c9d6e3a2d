"""Hand-computed values for places no other test pins exactly (see tools/mutants.py)."""

import torch

from eclip_core import maps


def test_upsample_is_bilinear_with_half_pixel_centres():
    """maps.upsample is bilinear with align_corners=False (half-pixel centres, edges clamped),
    row-major, over any leading dimensions.

    A 2x2 map [[0, 1], [2, 3]] to 4x6: along the width, output column j samples the input
    at (j + 0.5) / 3 - 0.5 clamped to [0, 1] -> [0, 0, 1/3, 2/3, 1, 1]; along the height,
    row i at (i + 0.5) / 2 - 0.5 -> [0, 1/4, 3/4, 1]. The map is w + 2 h, so the result is
    the sum of the two profiles (align_corners=True would give [0, 1/5, ..., 1] and
    [0, 1/3, 2/3, 1]; bicubic overshoots; nearest gives steps).
    """
    coarse = torch.tensor([[0.0, 1.0], [2.0, 3.0]], dtype=torch.float64)
    width = torch.tensor([0, 0, 1 / 3, 2 / 3, 1, 1], dtype=torch.float64)
    height = torch.tensor([0, 1 / 4, 3 / 4, 1], dtype=torch.float64)
    expected = width[None, :] + 2 * height[:, None]
    torch.testing.assert_close(maps.upsample(coarse, (4, 6)), expected, rtol=0, atol=1e-12)

    batch = torch.stack([coarse, -coarse, 2 * coarse])[:, None].expand(3, 2, 2, 2)  # (B, K, h, w)
    up = maps.upsample(batch, (4, 6))
    assert up.shape == (3, 2, 4, 6)
    torch.testing.assert_close(up[1, 1], -expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(up[2, 0], 2 * expected, rtol=0, atol=1e-12)
    assert maps.upsample(coarse, (2, 2)) is coarse  # the map's own size: unchanged
