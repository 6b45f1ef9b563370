"""Baseline trust-region rules compared against CPPO, one module per rule.

Each module registers its rule in `cppo.rules.registry` when imported; the registry imports them
lazily, so use `cppo.rules.get_rule(name)` rather than importing these modules directly.
"""
