"""The job queue: procrastinate on the same PostgreSQL; jobs join the caller's transaction."""

from tusk.queue.app import DEFAULT_RETRY, build_app, enqueue, load_blueprint, worker_engine

__all__ = ["DEFAULT_RETRY", "build_app", "enqueue", "load_blueprint", "worker_engine"]
