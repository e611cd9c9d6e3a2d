"""The symbolic equivalence holds, and the derivation can tell a false claim apart."""

import pytest
import sympy as sp

from eclip_core.paper import symbolic


@pytest.mark.parametrize("loosened", [True, False])
def test_grad_eclip_minus_attention_eclip_simplifies_to_zero(loosened):
    residuals = symbolic.equivalence_residuals(n_tokens=3, heads=2, head_dim=2, loosened=loosened)
    assert len(residuals) == 2
    assert all(r == 0 for r in residuals)


def test_one_head_case_also_vanishes():
    assert all(r == 0 for r in symbolic.equivalence_residuals(n_tokens=3, heads=1, head_dim=3))


def test_mismatched_pairing_does_not_vanish():
    assert symbolic.mismatched_residual() != 0


def test_one_head_logit_is_not_a_head_logit():
    per_head, one_head = symbolic.one_head_logits(width=4, heads=2)
    assert all(sp.simplify(one_head - h) != 0 for h in per_head)
    assert sp.simplify(one_head - sum(per_head) / sp.sqrt(2)) == 0


@pytest.mark.parametrize("loosened", [True, False])
def test_general_derivation_for_symbolic_sizes(loosened):
    d = symbolic.general_equivalence(loosened)
    assert d.residual == 0
    g, h, i = sp.symbols("g h i", integer=True, nonnegative=True)
    v = sp.IndexedBase("v")
    c = sp.Symbol("c", integer=True, nonnegative=True)
    assert sp.simplify(d.d_output - sp.KroneckerDelta(g, h) * v[i, h, c]) == 0
    assert {str(s) for s in d.grad_eclip.free_symbols} >= {"C", "H", "i"}  # sizes stay symbolic


def test_general_derivation_control_does_not_vanish():
    assert symbolic.general_equivalence(control=True).residual != 0
