"""Side-by-side benchmark against Flower's deployment runtime (``make bench-flower``).

Optional: it needs Flower in its own environment (``.venv-flower``, made by
``make bench-flower``); ``make bench`` never does.
"""
