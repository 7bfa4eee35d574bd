"""Delivery task messages taken from the broker many at a time, on the worker's event loop.

Celery's consumer takes a message, runs it, acknowledges it, one at a time and in its own
thread: a fixed cost per message whatever it carries. For a stream of one-job messages (single
sends, what services mostly make) that cost is the delivery worker's (docs/decisions.md). A
delivery worker therefore takes its queues' messages itself, on the loop that delivers them
(worker/consume/stream.py), and acknowledges the finished ones together:

- :mod:`worker.consume.fetch.redis`: kombu's Redis lists, in kombu's own layout (its unacked hash and
  index), urgent lane first;
- :mod:`worker.consume.fetch.amqp`: a RabbitMQ consumer of the worker's own (aiormq), acknowledging runs
  of finished messages with one ``basic.ack(multiple)``.

Both hand :class:`~worker.consume.fetch.message.Fetched` messages to the stream and are told when each
is finished (acknowledge) or must go back to the broker (its group crashed).
"""
