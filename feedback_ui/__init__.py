"""The browser labeling service: people compare two clips of the agent and say which is better.

- :func:`feedback_ui.app.create_app`: the FastAPI app over a preference store (:mod:`rlhf.store`).
- :mod:`feedback_ui.server`: ``rlhf serve`` (:class:`ServeConfig`, :func:`run_serve`), ``rlhf labelers-add``
  (:class:`LabelersAddConfig`, :func:`run_labelers_add`) and :func:`start_server_in_background` for the loop.

This package talks to the store (:mod:`rlhf.store`) only; it never imports torch, gymnasium or the rest of
:mod:`rlhf`. A workspace of real env segments and clips to try the page: ``python -m rlhf.sample_workspace DIR``.
"""
