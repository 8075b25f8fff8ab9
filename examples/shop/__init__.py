"""A shop's order workflow with the two services around it, written with Conveyor's
client library: a payment service and a carrier service that answer the workflow's
commands (``python -m examples.shop`` runs it all; see the README's "Writing a command
handler")."""
