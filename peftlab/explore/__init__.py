"""What the notebooks display: one module per topic, each an explorer (ipywidgets + matplotlib) whose
logic returns plain dicts (tested without a browser), plus the plot helpers and the Markdown tables.

These are the only modules of peftlab that import ipywidgets, IPython or matplotlib.pyplot, and no
module outside this package imports them (tests/test_layout.py).
"""
