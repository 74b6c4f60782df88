"""The snapshot domain: entities, states, rules, errors and the ports the outer parts implement.

Nothing here imports a framework, the database or a hypervisor library.
"""
