"""Sparse masked networks and NE's three operators, for any network made of masked layers and ReLUs.

Nothing here knows about agents: ``masks`` (masked layers, ERK), ``growth`` (elastic growth),
``dormant`` (dormant-unit pruning), ``topology`` (the scheduler that runs both), ``official`` (the official
code's grow-then-rewire schedule) and ``review`` (experience review).
"""
