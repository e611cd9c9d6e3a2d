"""The book's studies: what each chapter measures, as functions of a sample, with the claims it
states from them -- P1 (:mod:`.p1`), P2 (:mod:`.p2`), the published code's cost
(:mod:`.misalignment`), the counterfactual truth (:mod:`.counterfactual`), photographs
(:mod:`.photos`), which explainers are the same function (:mod:`.atlas`) and the derivations
in sympy (:mod:`.symbolic`).

The library (the top of :mod:`eclip_core`) never imports from here.
"""
