"""The book's studies: what each chapter measures, as functions of a sample, with the claims it
states from them -- P1 (:mod:`.p1`), P2 (:mod:`.p2`), the published code's cost
(:mod:`.misalignment`), the counterfactual truth (:mod:`.counterfactual`), what each departure costs dose by dose
(:mod:`.dose`), the same model written with other weights (:mod:`.rescaled`), the text branch
against word substitutions (:mod:`.text_truth`), photographs
(:mod:`.photos`), which explainers are the same function (:mod:`.atlas`), the derivations
in sympy (:mod:`.symbolic`), and the findings each chapter records with the closing chapter's
verdict table (:mod:`.verdicts`).

The library (the top of :mod:`eclip_core`) never imports from here.
"""

#: The model whose figures the book states (its chapters assert them on it, and print them on any other).
BOOK_MODEL = "eclip-shapes"


def is_book_model(model: str, pretrained: object = None) -> bool:
    """Whether a chapter runs on the book's own model with its own weights: then it asserts the
    figures the book states; on any other model it asserts only what holds for every model."""
    return model == BOOK_MODEL and pretrained is None
