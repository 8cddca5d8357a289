"""The paper's plasticity baselines as interventions between updates: Reset, ReDo, Plasticity Injection.
(LayerNorm is an agent option, ``agent.layernorm``.)"""
