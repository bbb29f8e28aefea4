"""A stand-in for Yespo's API, for tests, benchmarks and trying the collector out.

Not part of the product: the `yespo-collector` wheel and the Docker image hold only
`collector`. It runs from the checkout: ``python -m standin --port 9090`` from the
repository root, or ``async with StandIn() as yespo:`` in tests (see `standin.server`).
"""

from standin.faults import Faults, FaultsError, RejectIf
from standin.records import Recorded
from standin.server import StandIn, main

__all__ = ["Faults", "FaultsError", "Recorded", "RejectIf", "StandIn", "main"]
