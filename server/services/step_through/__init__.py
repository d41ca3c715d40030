"""Step-through: every number behind one output cell of a real layer, and the window index math."""

from server.services.step_through.trace import StepThrough

__all__ = ["StepThrough"]
