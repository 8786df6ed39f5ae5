"""Events: the transactional outbox and its publisher."""
