"""The atheris child of :func:`tests.helpers.fuzz.run_atheris`: ``python -m ... SECONDS``.

Its own module because coverage instrumentation must be in place before
``orchard.serde`` is imported: only Orchard's modules are instrumented
(instrumenting everything loaded takes minutes and guides nothing).
"""

from __future__ import annotations

import sys

import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports(include=["orchard"]):
    from tests.helpers.fuzz import serde_target


def main() -> None:
    """Fuzz for ``sys.argv[1]`` seconds from the corpus folder ``sys.argv[2]``.

    libFuzzer prints the figures and exits; new inputs it finds join the corpus.
    """
    seconds, corpus = int(sys.argv[1]), sys.argv[2]
    # Crash inputs go beside the corpus, not into the working directory (the
    # parent prints them from the log, base64 included).
    flags = [f"-max_total_time={seconds}", "-rss_limit_mb=4096", f"-artifact_prefix={corpus}/"]
    atheris.Setup([sys.argv[0], *flags, corpus], serde_target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
