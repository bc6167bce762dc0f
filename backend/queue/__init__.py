"""The queue: our small interface over arq (enqueue, status, abort), the task, the worker, the DLQ."""
