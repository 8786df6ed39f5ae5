"""The governed autonomous loop: Analyze, Hypothesize, Act, Learn (docs/autonomy.md).

The loop runs only typed actions from the registry (``registry.py``), under the tenant's
policy (``policy.py``), with human approval, budgets and an audit row per phase; every
claimed improvement is recomputed by the platform from its own records.
"""
