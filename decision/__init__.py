"""The transport-free decision core: scorers, A/B assignment, policy, reason codes, the engine.

The aiohttp handlers, the benchmarks, the simulator and the demo all call :class:`decision.engine.DecisionEngine`.
Nothing here does network I/O; loading models from the registry lives in ``decision.loader`` and runs off the
event loop.
"""
