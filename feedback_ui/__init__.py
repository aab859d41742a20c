"""The browser labeling service: people compare two clips of the agent and say which is better.

- :func:`feedback_ui.app.create_app`: the FastAPI app over a preference store (:mod:`rlhf.store`).
- :mod:`feedback_ui.server`: ``rlhf serve`` (:class:`ServeConfig`, :func:`run_serve`), ``rlhf labelers-add``
  (:class:`LabelersAddConfig`, :func:`run_labelers_add`) and :func:`start_server_in_background` for the loop.
- :mod:`feedback_ui.demo`: a workspace of real env segments and clips, to try the page (``python -m
  feedback_ui.demo DIR``).

This package talks to the store only; it never imports torch.
"""
