"""The queue: our small interface over arq (enqueue, abort), the task, the worker, the DLQ."""
