"""Symbolic forms of the paper's derivations (sympy), used by the book and the tests.

The score is an *undefined* function ``S`` of the CLS attention output, so nothing
about the rest of the network is assumed: the identities hold for any weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp


@dataclass
class AttentionSymbols:
    """Symbols of one attention layer's CLS row: N tokens, H heads, d channels per head."""

    A: sp.Matrix  # (H, N) attention probabilities of the CLS query
    v: sp.Matrix  # (N, H*d) values, head h owning channels h*d .. h*d+d-1
    lam: tuple  # loosened spatial term per token
    o: list  # the CLS attention output, one expression per channel
    w: list  # dS/do_c, evaluated at o
    score: sp.Expr  # S(o)


def attention_symbols(n_tokens: int = 3, heads: int = 2, head_dim: int = 2) -> AttentionSymbols:
    width = heads * head_dim
    A = sp.Matrix(heads, n_tokens, lambda h, i: sp.Symbol(f"A^{h}_{{0{i}}}"))
    v = sp.Matrix(n_tokens, width, lambda i, c: sp.Symbol(f"v_{{{i},{c}}}"))
    lam = sp.symbols(f"lambda_0:{n_tokens}")
    o = [sum(A[c // head_dim, i] * v[i, c] for i in range(n_tokens)) for c in range(width)]
    dummies = sp.symbols(f"o_0:{width}")
    S = sp.Function("S")
    w = [sp.diff(S(*dummies), dummies[c]).subs(dict(zip(dummies, o))) for c in range(width)]
    return AttentionSymbols(A, v, lam, o, w, S(*o))


def grad_eclip_term(s: AttentionSymbols, i: int, loosened: bool = True) -> sp.Expr:
    """lambda_i * sum_c w_c v_{i,c}: Grad-ECLIP's pre-ReLU value at token i."""
    term = sum(s.w[c] * s.v[i, c] for c in range(s.v.shape[1]))
    return s.lam[i] * term if loosened else term


def attention_eclip_term(s: AttentionSymbols, i: int, loosened: bool = True) -> sp.Expr:
    """lambda_i * sum_h dS/dA^h_{0,i}: Attention-ECLIP's pre-ReLU value at token i."""
    term = sum(sp.diff(s.score, s.A[h, i]) for h in range(s.A.shape[0]))
    return s.lam[i] * term if loosened else term


def equivalence_residuals(n_tokens: int = 3, heads: int = 2, head_dim: int = 2,
                          loosened: bool = True) -> list[sp.Expr]:
    """Simplified Grad-ECLIP minus Attention-ECLIP at every patch token (all 0 if the claim holds)."""
    s = attention_symbols(n_tokens, heads, head_dim)
    return [sp.simplify((grad_eclip_term(s, i, loosened) - attention_eclip_term(s, i, loosened)).doit())
            for i in range(1, n_tokens)]


def mismatched_residual(n_tokens: int = 3, heads: int = 2, head_dim: int = 2) -> sp.Expr:
    """A control that must NOT vanish: the gradients paired with another token's values."""
    s = attention_symbols(n_tokens, heads, head_dim)
    wrong = sum(s.w[c] * s.v[2, c] for c in range(s.v.shape[1]))
    return sp.simplify((wrong - attention_eclip_term(s, 1, loosened=False)).doit())


def one_head_logits(width: int = 4, heads: int = 2):
    """CLS-to-token-j attention logits of H heads and of the one-head recompute.

    Returns (per-head logits, one-head logit): the one head sums all channel products
    under one softmax with scale 1/sqrt(D), whereas each head scales by 1/sqrt(D/H)
    and normalises its own channels: another function of the same q and k.
    """
    q = sp.symbols(f"q_0:{width}")
    k = sp.symbols(f"k_0:{width}")
    d = width // heads
    per_head = [sum(q[c] * k[c] for c in range(h * d, (h + 1) * d)) / sp.sqrt(d) for h in range(heads)]
    one_head = sum(q[c] * k[c] for c in range(width)) / sp.sqrt(width)
    return per_head, one_head


# ----------------------------------------------------------------------------- symbolic sizes


@dataclass
class GeneralDerivation:
    """The equivalence for symbolic sizes: N tokens, H heads, C channels per head.

    Indexed symbols: ``A[h, j]`` the CLS row of head h's attention probabilities, ``v[j, h, c]``
    token j's value in channel c of head h, ``w[h, c] = dS/do_{h,c}`` the gradient of an
    arbitrary differentiable score S of the CLS attention output ``o``, ``lambda[i]`` the
    loosened term (1 without it). Each field is one step of the derivation.
    """

    output: sp.Expr  # o_{h,c} = sum_j A[h,j] v[j,h,c]
    d_output: sp.Expr  # d o_{h,c} / d A[g,i], the sum over j done
    d_score: sp.Expr  # dS/dA[g,i] = sum_{h,c} w[h,c] d o_{h,c}/dA[g,i]  (the chain rule)
    attention_eclip: sp.Expr  # lambda_i * sum_g dS/dA[g,i], the sum over g done
    grad_eclip: sp.Expr  # lambda_i * sum_{h,c} w[h,c] v[i,h,c]
    residual: sp.Expr  # grad_eclip - attention_eclip, simplified


def _sum_kronecker(expr: sp.Expr, index: sp.Symbol, low, high, within: sp.Expr) -> sp.Expr:
    """Sum ``expr`` over ``index`` in [low, high] and use that ``within`` holds (the free index
    lies in the same range) to drop the Piecewise the sum over a Kronecker delta leaves."""
    return sp.refine(sp.Sum(expr, (index, low, high)).doit(), within)


def general_equivalence(loosened: bool = True, control: bool = False) -> GeneralDerivation:
    """Grad-ECLIP minus Attention-ECLIP at token i for symbolic N, H, C (``residual`` is 0).

    ``control=True`` pairs the gradient with token i+1's values in Grad-ECLIP, a false claim
    whose residual must not vanish.
    """
    N, H, C = sp.symbols("N H C", integer=True, positive=True)
    i, j, g, h, c = sp.symbols("i j g h c", integer=True, nonnegative=True)
    A, v, w, lam = sp.IndexedBase("A"), sp.IndexedBase("v"), sp.IndexedBase("w"), sp.IndexedBase("lambda")
    weight = lam[i] if loosened else sp.Integer(1)
    output = sp.Sum(A[h, j] * v[j, h, c], (j, 0, N - 1))
    # d/dA[g,i] of the sum over j: KroneckerDelta(g,h) KroneckerDelta(i,j) v[j,h,c], summed over j
    summand = sp.diff(output, A[g, i]).function
    d_output = _sum_kronecker(summand, j, 0, N - 1, sp.Q.le(i, N - 1))
    d_score = sp.Sum(w[h, c] * d_output, (c, 0, C - 1), (h, 0, H - 1))
    # Attention-ECLIP sums dS/dA[g,i] over the heads g; the finite sums commute, so the sum
    # over g is done first, inside: sum_g KroneckerDelta(g, h) = 1 for h in [0, H-1]
    over_heads = _sum_kronecker(d_score.function, g, 0, H - 1, sp.Q.le(h, H - 1))
    attention = weight * sp.Sum(over_heads, *d_score.limits)
    token = i + 1 if control else i
    grad = weight * sp.Sum(w[h, c] * v[token, h, c], (c, 0, C - 1), (h, 0, H - 1))
    return GeneralDerivation(output, d_output, d_score, attention, grad, sp.simplify(grad - attention))


@dataclass
class ShapleyDerivation:
    """The Shapley values of n objects for a score v(S) of the present coalition S, symbolically.

    ``values``: a symbol per coalition (``v_{}``, ``v_{0}``, ``v_{01}``, ...); ``phi``: each
    object's Shapley value; ``efficiency``: sum(phi) - (v(all) - v(none)), zero for any v;
    ``single_removal``: each object's single-removal effect v(all) - v(all but it);
    ``redundant``: phi and the single-removal effects when the first two objects stand in for each
    other (either one carries the score 1, neither 0; the third carries nothing).
    """

    values: dict[frozenset[int], sp.Symbol]
    phi: list[sp.Expr]
    efficiency: sp.Expr
    single_removal: list[sp.Expr]
    redundant: tuple[list[sp.Expr], list[sp.Expr]]


def shapley_derivation(n: int = 3) -> ShapleyDerivation:
    """Shapley values of ``n`` objects with an undefined score of each coalition (see
    :class:`ShapleyDerivation`): the identities hold for any model."""
    import itertools
    import math

    coalitions = [frozenset(c) for r in range(n + 1) for c in itertools.combinations(range(n), r)]
    values = {c: sp.Symbol("v_{" + "".join(map(str, sorted(c))) + "}") for c in coalitions}
    everything = frozenset(range(n))
    phi = []
    for o in range(n):
        total = sp.Integer(0)
        for c in coalitions:
            if o in c:
                continue
            weight = sp.Rational(math.factorial(len(c)) * math.factorial(n - len(c) - 1), math.factorial(n))
            total += weight * (values[c | {o}] - values[c])
        phi.append(sp.expand(total))
    efficiency = sp.simplify(sum(phi) - (values[everything] - values[frozenset()]))
    single = [values[everything] - values[everything - {o}] for o in range(n)]
    either = {values[c]: int(bool(c & {0, 1})) for c in coalitions}
    redundant = ([sp.nsimplify(p.subs(either)) for p in phi], [s.subs(either) for s in single])
    return ShapleyDerivation(values, phi, efficiency, single, redundant)


@dataclass
class BasisDerivation:
    """Grad-ECLIP's pre-ReLU value at one token as a bilinear form in the target and the token's
    values (E embedding dimensions, D channels; the explanation basis).

    ``t``, ``e``, ``v``: symbols of the target (unit), the image embedding and the token's
    values; ``J``: (E, D) symbols of de/do_0; ``cotangent``: the cosine's gradient with respect
    to ``e``, ``(t - (f.t) f) / |e|`` with ``f = e/|e|``; ``weights``: ``J^T`` times it (the
    channel weights w); ``value``: ``lambda * sum_c w_c v_c`` (Grad-ECLIP before its ReLU);
    ``row``: ``lambda (I - f f^T) J v / |e|``, the token's row of the basis; ``residual``:
    value - t.row (0: the map is one row times the target); ``linearity``: the value at
    ``a t1 + b t2`` minus ``a`` times the value at ``t1`` minus ``b`` times the value at ``t2`` (0);
    ``control``: the same residual with the cosine's gradient taken as ``t / |e|`` alone,
    which must not vanish.
    """

    t: sp.Matrix
    e: sp.Matrix
    v: sp.Matrix
    J: sp.Matrix
    cotangent: sp.Matrix
    weights: sp.Matrix
    value: sp.Expr
    row: sp.Matrix
    residual: sp.Expr
    linearity: sp.Expr
    control: sp.Expr


def basis_derivation(embed: int = 3, channels: int = 2) -> BasisDerivation:
    """The explanation basis, symbolically, for an ``embed``-dimensional embedding and
    ``channels`` channels (see :class:`BasisDerivation`): the Jacobian J is left as symbols, so
    the identity holds for any network after the last block's attention."""
    t = sp.Matrix(embed, 1, lambda i, _: sp.Symbol(f"t_{i}", real=True))
    e = sp.Matrix(embed, 1, lambda i, _: sp.Symbol(f"e_{i}", real=True))
    v = sp.Matrix(channels, 1, lambda c, _: sp.Symbol(f"v_{c}", real=True))
    J = sp.Matrix(embed, channels, lambda i, c: sp.Symbol(f"J_{{{i}{c}}}", real=True))
    lam = sp.Symbol("lambda", positive=True)
    norm = sp.sqrt(sum(x ** 2 for x in e))
    f = e / norm

    def value_at(target: sp.Matrix, projected: bool = True) -> sp.Expr:
        cot = (target - (f.T * target)[0] * f) / norm if projected else target / norm
        return lam * (J.T * cot).dot(v)

    cotangent = (t - (f.T * t)[0] * f) / norm
    weights = J.T * cotangent
    value = lam * weights.dot(v)
    row = lam * (sp.eye(embed) - f * f.T) * J * v / norm
    residual = sp.simplify(value - row.dot(t))
    a, b = sp.symbols("a b", real=True)
    t1 = sp.Matrix(embed, 1, lambda i, _: sp.Symbol(f"s_{i}", real=True))
    t2 = sp.Matrix(embed, 1, lambda i, _: sp.Symbol(f"u_{i}", real=True))
    linearity = sp.simplify(value_at(a * t1 + b * t2) - a * value_at(t1) - b * value_at(t2))
    control = sp.simplify(value_at(t, projected=False) - row.dot(t))
    return BasisDerivation(t, e, v, J, cotangent, weights, value, row, residual, linearity, control)
