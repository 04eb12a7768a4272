"""Automated, hardware-aware search (`edgeshrink search`): recipes from the stages' declared search spaces, or
architectures from a zoo family's, with the device as constraints and accuracy against deployable bytes or latency
as objectives, on an Optuna study that several processes or machines share.

    run.py        search(): inputs, the study, the worker, the result
    spec.py       what a study searches (stored in it, checked when a worker joins)
    setup.py      data (validation held out from training), the baseline
    space.py      recipe templates and sampling from the stages' spaces
    builders.py   trial -> candidate (a recipe, or an architecture refused untrained when it cannot fit)
    candidate.py  build, export, measure, constraints
    deploy.py     the file the device runs, and what it needs there
    study.py      the Optuna study, sampler and worker loop
    storage.py    journal / SQLite / PostgreSQL storage, dead workers' trials
    front.py      Pareto front, the reference, front files (recipe TOMLs)
    report.py     search.json and report.html
"""

from edgeshrink.autosearch.run import SearchResult, search

__all__ = ["SearchResult", "search"]
