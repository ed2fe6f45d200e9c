"""The transport-free decision core: scorers, A/B assignment, policy, reason codes, the engine.

The aiohttp handlers, the benchmarks, the simulator and the demo all call :class:`decision.engine.DecisionEngine`.
Nothing here does I/O: loading models from the MLflow registry lives in ``registry.loader`` (it builds the
:class:`decision.models.ModelSet` this core decides with) and runs off the event loop.
"""
