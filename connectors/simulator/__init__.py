"""`liandong simulate`: a year of Panyu's enforcement traffic, published through the real connectors.

- `model` draws the year (pure): `simulate_year(seed)` yields `SimulatedEvent`s in publish order,
  and `to_envelope` turns one into the validated envelope the SDK would publish.
- `profile.json` holds every rate the model assumes, as data.
- `channels` publishes through the HTTP gateway, the Kafka SDK and the spreadsheet import;
  `runner` paces the year in wall time and writes the simulated clock.
"""

from connectors.simulator.model import YearModel, simulate_year
from connectors.simulator.simulated import SimulatedEvent, to_envelope

__all__ = ["SimulatedEvent", "YearModel", "simulate_year", "to_envelope"]
