"""Conveyor's commerce workflows; `engine.registry.load_workflows(["workflows"])` finds them."""
