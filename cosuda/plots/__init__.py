"""All figures of the notebooks and the runner. Library code elsewhere never draws.

One file per topic (datasets, method, training); everything is re-exported here so a notebook
writes ``from cosuda import plots; plots.show_samples(...)``.
"""
