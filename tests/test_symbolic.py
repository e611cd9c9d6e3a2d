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


def test_shapley_values_symbolically_and_against_the_numeric_ones():
    """Efficiency holds for any score; two objects that stand in for each other share it while
    single removals see nothing; substituting numbers gives counterfactual.shapley_values."""
    import itertools

    import numpy as np

    from eclip_core.paper.counterfactual import shapley_values
    from eclip_core.paper.symbolic import shapley_derivation

    d = shapley_derivation(3)
    assert d.efficiency == 0
    assert d.redundant == ([sp.Rational(1, 2), sp.Rational(1, 2), 0], [0, 0, 0])
    rng = np.random.default_rng(0)
    numbers = {c: float(rng.normal()) for c in d.values}
    scores = {frozenset(range(3)) - c: np.array([numbers[c]]) for c in d.values}  # removed -> score
    numeric = shapley_values(scores, 3)
    symbolic = [float(p.subs({d.values[c]: numbers[c] for c in d.values})) for p in d.phi]
    assert np.allclose(numeric, symbolic, atol=1e-12)
    assert len(list(itertools.chain(d.values))) == 8


def test_the_explanation_basis_symbolically():
    """Grad-ECLIP before its ReLU is one row times the target, for any Jacobian; linear in the
    target; and the control that forgets the cosine's projection does not vanish."""
    from eclip_core.paper.symbolic import basis_derivation

    d = basis_derivation(3, 2)
    assert d.residual == 0 and d.linearity == 0 and d.control != 0
    assert d.row.shape == (3, 1) and all(not x.has(*d.t) for x in d.row)  # the row does not depend on t
