"""Asynchronous messaging: envelope, brokers (NATS JetStream, RabbitMQ), outbox and inbox.

A service writes messages to its outbox in the transaction that changes its state; a relay
publishes them. A consumer handles each message in one transaction with an inbox record of
its id, so a redelivered message has no second effect; what keeps failing is dead-lettered.
"""
