"""The wire format: the CloudEvents codec and the topic names.

Pure and below everything that speaks it: the store queues outbound messages in this
format, the Kafka services (:mod:`engine.messaging`) read and write it.
"""
