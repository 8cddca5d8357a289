"""Reading stored results for the notebooks.

Imports go one way: :mod:`.plotting` (names, colours, style) and :mod:`.scoring` (final scores, rliable) depend
on nothing here; :mod:`.verdicts` (generated sentences), :mod:`.curves` and :mod:`.score_figures` build on them,
:mod:`.cyclic` on :mod:`.curves`; :mod:`.topology_trace` and :mod:`.results` stand apart.
"""
