"""The shapes world: a procedural world of coloured shapes with ground truth (:mod:`.shapes`),
its word-level tokenizer (:mod:`.vocab`), the models trained on it and shipped with the package
(:mod:`.embedded`, which registers them by name) and how they were trained (:mod:`.train`).

It builds on the library (the typed model, the evaluation loop) and the library never imports
it; the book's studies (:mod:`eclip_core.paper`) use both.
"""
