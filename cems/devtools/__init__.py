"""Developer and operator tools, apart from the pipeline stages: project-owned local services
(:mod:`cems.devtools.local`), the demo (:mod:`cems.devtools.demo`), the benchmark (:mod:`cems.devtools.bench`),
the chaos run (:mod:`cems.devtools.chaos`) and the decoder fuzz (:mod:`cems.devtools.fuzz`).

Nothing in the pipeline (``decode`` → ``validate`` → ``rules``/``engine`` → ``sinks``, the ``service`` shell)
imports from here; these modules use the pipeline like any other program would.
"""
