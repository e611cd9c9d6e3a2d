"""`make test` runs its files in two pytest-xdist workers (``--dist loadfile``, in collection
order): the longest files go first, so that no worker is left running a long chapter alone at
the end. Within a file the order is kept (a notebook's cells run in order)."""

#: The longest files of the suite at one thread each, longest first (measured with --durations).
LONGEST_FIRST = [
    "tests/test_your_model.py",
    "tests/test_resampling_p2.py",
    "notebooks/05_principles.ipynb",
    "tests/test_resampling.py",
    "notebooks/04_misaligned.ipynb",
    "notebooks/08_ground_truth.ipynb",
]


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))
